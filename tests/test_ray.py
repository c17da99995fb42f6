"""Scale-out on Ray: a local Ray instance of 2 CPUs, actors that each load the model once.

The reference is the single-process run (the pipeline, one PyTorch thread as each actor has): the cluster's
outputs must be the same bytes, a re-run must do nothing, and killing an actor mid-run must still give every
output once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightsr
from lightsr.pipeline import Job
from lightsr.pipeline import run as run_pipeline
from lightsr.upscaler import Upscaler

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from lightsr.ray import RayUpscaler, run_files  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance of 2 CPUs whose workers import this lightsr."""
    import lightsr.ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {**lightsr.ray.WORKER_ENV, "PYTHONPATH": lightsr.ray._package_root()}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    net = lightsr.create_model("lksmn", scale=2, channels=24, num_blocks=2).eval()
    return lightsr.save_model(net, tmp_path_factory.mktemp("w") / "net_x2.safetensors")


def _inputs(folder: Path, n: int, size: tuple[int, int] = (48, 64)) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mode = ("RGB", "L", "RGBA")[i % 3]
        px = rng.integers(0, 256, (*size, len(mode)), dtype=np.uint8)
        Image.fromarray(px[:, :, 0] if mode == "L" else px, mode).save(folder / f"{i:02d}.png")
    return sorted(folder.iterdir())


def _reference(weights: Path, files: list[Path], out: Path) -> dict[str, bytes]:
    """The single-process run, with one PyTorch thread as each actor has (the thread count can change the
    last bit of some convolutions, so the reference matches it)."""
    threads = torch.get_num_threads()
    try:
        up = Upscaler(weights, tile=0, threads=1)
        results = run_pipeline(up, [Job(f, out / f.name) for f in files])
    finally:
        torch.set_num_threads(threads)
    assert all(r.ok for r in results)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_two_actors_write_what_one_process_writes_and_a_rerun_does_nothing(tmp_path: Path, cluster,
                                                                          weights: Path) -> None:
    files = _inputs(tmp_path / "in", 10)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    jobs = [Job(f, tmp_path / "out" / f.name) for f in sorted((tmp_path / "in").iterdir())]
    reported = []
    results = run_files(jobs, {"model": str(weights), "tile": 0}, actors=2, report=reported.append)
    assert [r.job for r in results] == jobs and len(reported) == len(jobs)
    bad = [r for r in results if not r.ok]
    assert [r.job.src.name for r in bad] == ["broken.png"] and "\n" not in bad[0].error
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    assert written == _reference(weights, files, tmp_path / "ref")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    again = run_files(jobs, {"model": str(weights), "tile": 0}, actors=2)
    assert all(r.frames == 0 for r in again if r.ok)  # nothing upscaled again
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == stamps


def _actor_pids() -> list[int]:
    """This test's Ray actor processes (Ray names them after the class they run), descendants of this process."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            pid, ppid = int(entry.name), int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if "FileUpscaler" in cmd and _descends(ppid):
            pids.append(pid)
    return pids


def _descends(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            pid = int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def test_an_actor_killed_mid_run_loses_nothing(tmp_path: Path, cluster, weights: Path) -> None:
    files = _inputs(tmp_path / "in", 16, size=(120, 160))
    out = tmp_path / "out"
    killed: list[tuple[int, int]] = []  # (pid, outputs at that moment)

    def kill_one() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = [p for p in out.glob("*.png")] if out.exists() else []
            pids = _actor_pids()
            if done and pids:
                os.kill(pids[0], signal.SIGKILL)
                killed.append((pids[0], len(done)))
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    results = run_files([Job(f, out / f.name) for f in files], {"model": str(weights), "tile": 0}, actors=2)
    killer.join(5)
    assert killed and killed[0][1] < len(files), killed  # it died with files still to do
    assert all(r.ok for r in results)
    assert sorted(p.name for p in out.iterdir()) == [f.name for f in files]  # each once, no temporaries
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert written == _reference(weights, files, tmp_path / "ref")


def test_map_batches_class_upscales_a_column(cluster, weights: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(4)]
    ds = ray.data.from_items([{"image": im, "id": i} for i, im in enumerate(images)])
    rows = ds.map_batches(RayUpscaler, fn_constructor_kwargs={"model": str(weights), "tile": 0, "threads": 1},
                          batch_size=2, concurrency=1).take_all()
    threads = torch.get_num_threads()
    try:
        up = Upscaler(weights, tile=0, threads=1)
        for row in rows:
            assert np.array_equal(row["image"], up.upscale(images[row["id"]]))
    finally:
        torch.set_num_threads(threads)
