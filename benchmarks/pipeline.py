"""``lightsr upscale`` over many files: the streaming pipeline against the per-file path it replaced.

Each run is the real command line in a child process (``python -m lightsr upscale DIR -o OUT -q``), timed by wall
clock and by the child's CPU time (user + system, from ``wait4``), with its peak RSS. The old path is the source
tree of another commit (``--old REV``: ``git archive`` into a temporary folder, run with ``PYTHONPATH`` set to it);
old and new run alternately, ``--rounds`` times each, on the same inputs; medians are reported with the load
average around the runs (the machine may be shared: CPU time moves less than wall time under load).

Workloads (``--workloads``):

* ``b100``: the 100 B100 ×4 LR images (≈120×80) of ../shared at ×4 with the default model;
* ``tiny``: 1,000 generated 4×4 PNGs (per-file overhead);
* ``mixed``: a generated folder of PNG/JPEG/16-bit/RGBA/LA/gray images; the outputs of old and new must be the
  same bytes (checked, reported);
* ``many``: 10,000 4×4 PNGs, new path only: peak memory against ``tiny``'s (bounded: it must not grow with the
  number of files).

``--busy N`` runs N busy-looping processes beside every run (CPU-bound work sharing the machine); ``--env
KEY=VALUE`` adds to the environment of the new path's runs (e.g. ``OMP_WAIT_POLICY=ACTIVE`` to see what the
sleeping waits of lightsr.threads change), ``--old-env`` to the old path's, and ``--label`` names the new variant.
``--nice N`` runs the measured commands (and the busy processes), each in a session of its own, at that niceness
(of their scheduling autogroup where the kernel has them): on a machine shared with other work, a negative value
(as root) comes close to having the cores alone, and a busy process beside gets an equal share.

    python benchmarks/pipeline.py --old c1e068b --workloads b100 tiny mixed --rounds 3
    python benchmarks/pipeline.py --old c1e068b --workloads tiny --busy 1
    python benchmarks/pipeline.py --workloads many --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))


def old_tree(rev: str, into: Path) -> Path:
    """The ``src`` folder of commit ``rev``, extracted into ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", rev, "src"], capture_output=True, check=True)
    into.mkdir(parents=True, exist_ok=True)
    tar = into / "old.tar"
    tar.write_bytes(archive.stdout)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    return into / "src"


def make_inputs(kind: str, folder: Path, tiny: int | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    if kind == "b100":
        src = SHARED / "data/benchmark/B100/LR_bicubic/X4"
        if not src.is_dir():
            sys.exit(f"{src}: missing (set LIGHTSR_SHARED)")
        return src
    if kind in ("tiny", "many"):
        n = (tiny or 1000) if kind == "tiny" else 10_000
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
        return folder
    if kind == "mixed":
        yy, xx = np.mgrid[0:60, 0:80]
        base = (np.stack([xx / 80, yy / 60, (xx + yy) / 140], -1) * 200 + rng.random((60, 80, 3)) * 55).astype(np.uint8)
        Image.fromarray(base).save(folder / "rgb.png")
        Image.fromarray(base).save(folder / "photo.jpg", quality=90)
        Image.fromarray(np.dstack([base, rng.integers(0, 256, (60, 80), dtype=np.uint8)])).save(folder / "rgba.png")
        Image.fromarray(base[:, :, 1]).save(folder / "gray.png")
        Image.fromarray(np.dstack([base[:, :, :1]] * 2), "LA").save(folder / "la.png")
        Image.fromarray(base[:, :, 0].astype(np.uint16) * 257).save(folder / "gray16.png")
        sys.path.insert(0, str(REPO_ROOT / "src"))
        from lightsr.imageio import ImageData, save_image

        save_image(folder / "rgb16.png", ImageData(base.astype(np.uint16) * 257 + 7))
        save_image(folder / "rgb16.tif", ImageData(base.astype(np.uint16) * 250))
        Image.fromarray(base[:40, :30]).save(folder / "small.webp", quality=90)
        return folder
    raise SystemExit(f"unknown workload {kind}")


def run_once(src_tree: Path, inputs: Path, out: Path, env_extra: dict[str, str], extra: list[str],
             busy: int, nice: int = 0) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(src_tree), **env_extra}
    env.pop("OMP_NUM_THREADS", None)  # the runtime's own choice, as a user gets it
    renice = (lambda: _priority(nice)) if nice else None
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=renice) for _ in range(busy)]
    try:
        time.sleep(0.2 if busy else 0)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        p = subprocess.Popen([sys.executable, "-m", "lightsr", "upscale", str(inputs), "-o", str(out), "-q",
                              *extra], env=env, preexec_fn=renice)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"run failed ({src_tree}): status {os.waitstatus_to_exitcode(status)}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024, "load": load}


def _priority(nice: int) -> None:
    """In the child: its own session at niceness ``nice``. With the kernel's autogroup scheduling a process's nice
    weighs only against its own session's processes; each session (autogroup) competes with the others by the
    autogroup's nice, which root may set."""
    os.setsid()
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        os.nice(nice)


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", metavar="REV", help="commit whose per-file path is the baseline (git rev)")
    ap.add_argument("--workloads", nargs="+", default=["b100", "tiny", "mixed"],
                    choices=["b100", "tiny", "mixed", "many"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=0, help="busy-looping processes beside each run")
    ap.add_argument("--tiny", type=int, help="files of the tiny workload (default 1,000)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the new path's runs")
    ap.add_argument("--old-env", action="append", default=[], metavar="KEY=VALUE",
                    help="environment of the old path's runs")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the measured commands")
    ap.add_argument("--label", default="new", help="name of the new variant in the table")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more options for every run")
    args = ap.parse_args()
    env_extra = dict(e.split("=", 1) for e in args.env)
    old_env = dict(e.split("=", 1) for e in args.old_env)
    with tempfile.TemporaryDirectory(prefix="lightsr-pipeline-") as tmp:
        tmp = Path(tmp)
        trees = {args.label: REPO_ROOT / "src"}
        if args.old:
            trees = {"old": old_tree(args.old, tmp / "old"), **trees}
        print(f"# {os.cpu_count()} CPUs, busy processes beside: {args.busy}, rounds: {args.rounds}, nice "
              f"{args.nice}; new env: {env_extra or '-'}; old env: {old_env or '-'}")
        print("| workload | path | wall s (median) | CPU s (median) | per file, ms | peak RSS MB | load avg |")
        print("|---|---|---|---|---|---|---|")
        for kind in args.workloads:
            inputs = make_inputs(kind, tmp / f"in_{kind}", args.tiny)
            n = sum(1 for p in inputs.iterdir() if p.is_file())
            names = [k for k in trees if not (kind == "many" and k == "old")]
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in names}
            for _ in range(args.rounds):
                for name in names:  # alternating: old, new, old, new, …
                    runs[name].append(run_once(trees[name], inputs, tmp / f"out_{kind}_{name}",
                                               env_extra if name != "old" else old_env, args.extra, args.busy,
                                               args.nice))
            for name in names:
                wall = statistics.median(r["wall"] for r in runs[name])
                cpu = statistics.median(r["cpu"] for r in runs[name])
                rss = max(r["rss_mb"] for r in runs[name])
                load = statistics.mean(r["load"] for r in runs[name])
                print(f"| {kind} ({n} files) | {name} | {wall:.2f} | {cpu:.2f} | {1000 * wall / n:.1f} | {rss:.0f} | "
                      f"{load:.1f} |")
            if "old" in runs:
                new = names[-1]
                w = statistics.median(r["wall"] for r in runs["old"]) / statistics.median(r["wall"] for r in runs[new])
                c = statistics.median(r["cpu"] for r in runs["old"]) / statistics.median(r["cpu"] for r in runs[new])
                same = outputs(tmp / f"out_{kind}_old") == outputs(tmp / f"out_{kind}_{new}")
                print(f"|  | throughput {new}/old | ×{w:.2f} wall | ×{c:.2f} CPU | | outputs identical: "
                      f"{'yes' if same else 'NO'} | |")


if __name__ == "__main__":
    main()
