"""The long fuzz profile: tests/test_fuzz.py with many examples, in a child process under an address-space cap.

    python scripts/fuzz.py [--examples 4000] [--cache-examples 1000] [--memory-gb 8] [-k EXPRESSION]

Every mutated checkpoint, image and config, every mutated cached graph or its manifest, every answer of a hostile
download server (a local one on 127.0.0.1), every ``--degrade`` spec and every folder tree of symbolic links under a
recursive glob must give a (correct) result or a one-line LightSRError; the child's address space is capped so that
an unbounded allocation fails the run instead of swapping. Prints the outcome counts.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=4000,
                   help="examples per property (8 properties: checkpoint bytes, metadata, tensors; images; configs; "
                        "download answers; --degrade specs; recursive globs through links)")
    p.add_argument("--cache-examples", type=int, default=1000,
                   help="examples of the cached-graph property (each mutated export is rebuilt and checked)")
    p.add_argument("-k", dest="select", default=None, help="run only the properties pytest's -k selects")
    p.add_argument("--memory-gb", type=float, default=8.0, help="address-space cap of the child process")
    args = p.parse_args()
    cap = int(args.memory_gb * (1 << 30))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = {**os.environ, "LIGHTSR_FUZZ_EXAMPLES": str(args.examples),
           "LIGHTSR_FUZZ_CACHE_EXAMPLES": str(args.cache_examples)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "tests/test_fuzz.py"]
    if args.select:
        cmd += ["-k", f"({args.select}) or report"]
    return subprocess.run(cmd, cwd=ROOT, env=env, preexec_fn=limit, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
