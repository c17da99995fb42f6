"""Print the declared minimum of every runtime dependency as exact pins, for CI's minimum-versions step.

    pip install $(python scripts/min_requirements.py)

torch is left out: only the pinned CPU build is reachable on the CI machine, so its floor is kept at the oldest
release whose APIs lightsr uses (checked by reading the APIs' "added in" notes, see CHANGELOG.md).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    # The [project] dependencies array, read without tomllib (Python 3.11+ only; lightsr supports 3.10).
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
    deps = re.findall(r'"([^"]+)"', block[1]) if block else []
    pins = []
    for dep in deps:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)\s*", dep)
        if not m:
            print(f"min_requirements: cannot read a floor from {dep!r}", file=sys.stderr)
            return 1
        if m[1].lower() != "torch":
            pins.append(f"{m[1]}=={m[2]}")
    print(" ".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
