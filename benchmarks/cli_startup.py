"""Wall time of ``lightsr COMMAND --help`` for every subcommand: the start-up a user waits for before any work.

Each command runs ``--runs`` times in a fresh process, the commands interleaved round by round (a noisy machine
slows neighbours alike); prints the median and the minimum per command.

    python benchmarks/cli_startup.py [--runs 9]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from lightsr.cli import _SUBCOMMANDS  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args()
    exe = shutil.which("lightsr") or str(Path(sys.executable).with_name("lightsr"))
    commands = [[], *[[name] for name in _SUBCOMMANDS]]
    times: dict[str, list[float]] = {" ".join(c) or "(none)": [] for c in commands}
    for _ in range(args.runs):
        for c in commands:
            t = time.perf_counter()
            subprocess.run([exe, *c, "--help"], check=True, stdout=subprocess.DEVNULL)
            times[" ".join(c) or "(none)"].append(time.perf_counter() - t)
    print(f"| lightsr COMMAND --help | median (s) | min (s) |  ({args.runs} runs, interleaved)")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
