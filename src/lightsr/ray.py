"""Upscaling on a Ray cluster (``pip install "lightsr[ray]"``): Ray Data actors, each with its own Upscaler.

Two ways in:

* :class:`RayUpscaler`, a callable class for :meth:`ray.data.Dataset.map_batches`: arrays in a column (what
  :func:`ray.data.read_images` gives) upscaled by an Upscaler built once per actor, on a CPU or a GPU::

      ds = ray.data.read_images("s3://bucket/photos/")
      ds = ds.map_batches(RayUpscaler, fn_constructor_kwargs={"model": "photos_x4.safetensors"}, batch_size=8,
                          concurrency=4, num_gpus=1)

* :func:`run_files`, what ``lightsr upscale --ray [ADDRESS]`` runs: the same jobs as on one machine, files spread
  over actors that each read, upscale and write their files with :mod:`lightsr.pipeline` (atomically, as
  ``upscale`` does). A file whose output exists is not redone, so a re-run after an interruption does only what is
  missing; Ray restarts an actor that dies and runs its files again, and since a finished output is never
  written twice, every output comes out once. Input and output paths must mean the same on every node (a shared
  file system).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightsr import _optional
from lightsr.errors import LightSRError, UsageError
from lightsr.pipeline import Job, Result, WriteOptions
from lightsr.pipeline import run as run_pipeline
from lightsr.threads import PASSIVE_WAITS

log = logging.getLogger("lightsr")

# What every worker process gets in its environment (lightsr.threads: many actors share a node's cores).
WORKER_ENV = dict(PASSIVE_WAITS)


def _ray() -> Any:
    ray = _optional.load("ray", "--ray", "ray")
    _optional.load("ray.data", "--ray", "ray")
    return ray


def _package_root() -> str:
    """The folder this process imports lightsr from."""
    return str(Path(__file__).resolve().parents[1])


def _upscaler(kwargs: dict[str, Any]) -> Any:
    from lightsr.upscaler import Upscaler

    return Upscaler(**kwargs)


class RayUpscaler:
    """For :meth:`ray.data.Dataset.map_batches`: upscales the arrays in ``column`` (``H×W`` or ``H×W×C``, uint8
    or uint16; float in [0, 1] also accepted) and returns the batch with that column replaced by the results.
    ``model`` and ``upscaler_kwargs``: :class:`lightsr.Upscaler`'s arguments (``scale``, ``tile``, ``device``,
    ``precision``, …), the Upscaler built once per actor. Rows that cannot be upscaled raise (Ray then reports
    the batch); check sizes beforehand for untrusted data (``max_output_pixels`` applies)."""

    def __init__(self, model: Any = None, column: str = "image", **upscaler_kwargs: Any) -> None:
        self.column = column
        self.up = _upscaler({"model": model, **upscaler_kwargs})

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = batch[self.column]
        out = [self.up.upscale(np.asarray(image)) for image in images]
        shapes = {o.shape for o in out}
        batch = dict(batch)
        if len(shapes) == 1 and out:
            batch[self.column] = np.stack(out)
        else:  # ragged: one array per row
            column = np.empty(len(out), dtype=object)
            column[:] = out
            batch[self.column] = column
        return batch


class FileUpscaler:
    """For :meth:`ray.data.Dataset.map_batches` over rows ``{"src": path, "dst": path}``: each file read,
    upscaled and written by this actor (:mod:`lightsr.pipeline`; ``options``: :class:`WriteOptions`). Returns
    ``index`` (passed through), ``error`` ('' when written or skipped), ``frames`` and ``skipped`` (the output
    existed already: written before, by this run's earlier try of the same batch or by an earlier run)."""

    def __init__(self, upscaler: dict[str, Any], options: WriteOptions) -> None:
        for key, value in WORKER_ENV.items():
            os.environ.setdefault(key, value)
        self.up = _upscaler(upscaler)
        self.options = options

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        jobs, skipped = [], []
        for src, dst in zip(batch["src"], batch["dst"], strict=True):
            job = Job(Path(str(src)), Path(str(dst)))
            exists = job.dst.exists() and not self.options.overwrite
            skipped.append(exists)
            if not exists:
                jobs.append(job)
        results = iter(run_pipeline(self.up, jobs, self.options))
        errors, frames = [], []
        for skip in skipped:
            r = Result(Job(Path(), Path())) if skip else next(results)
            errors.append(r.error or "")
            frames.append(r.frames)
        return {"index": np.asarray(batch["index"]), "error": np.asarray(errors, dtype=object),
                "frames": np.asarray(frames), "skipped": np.asarray(skipped)}


def run_files(jobs: Sequence[Job], upscaler: dict[str, Any], options: WriteOptions | None = None,
              address: str | None = None, actors: int | None = None, cpus: float = 1, gpus: float = 0,
              report: Callable[[Result], None] | None = None, progress: bool = False) -> list[Result]:
    """Run ``jobs`` on a Ray cluster: ``address`` as :func:`ray.init` takes it (``auto``, ``ray://host:10001``,
    ``host:6379``; None or ``local``: a cluster started on this machine, stopped at the end). ``upscaler``:
    :class:`lightsr.Upscaler`'s arguments, for the Upscaler each actor builds. ``actors``: how many (default:
    the cluster's CPUs / ``cpus``, or its GPUs / ``gpus`` when ``gpus`` > 0); each takes ``cpus`` CPUs (its
    PyTorch threads) and ``gpus`` GPUs. Returns one :class:`Result` per job, in order; ``report(result)`` is
    called as each comes back. Outputs that exist (and ``options.overwrite`` is off) are not redone: their
    Result has no error and 0 frames. ``upscaler["model"]`` is best a name or a path, which each actor resolves
    (a published name is downloaded on each node): a network object is copied to every actor."""
    ray = _ray()
    options = options or WriteOptions()
    jobs = list(jobs)
    if not jobs:
        return []
    started = not ray.is_initialized()
    if started:
        local = address in (None, "", "local")
        env = dict(WORKER_ENV)
        if local:  # the workers import the same lightsr as this process, wherever it comes from
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), os.environ.get("PYTHONPATH")) if p)
        try:
            ray.init(address=None if local else address, logging_level=logging.ERROR, log_to_driver=False,
                     include_dashboard=False, runtime_env={"env_vars": env})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UsageError(f"--ray {address}: cannot connect ({str(e).strip().splitlines()[0][:160]})") from None
    try:
        return _run(ray, jobs, upscaler, options, actors, cpus, gpus, report, progress)
    finally:
        if started:
            ray.shutdown()


def _run(ray: Any, jobs: list[Job], upscaler: dict[str, Any], options: WriteOptions, actors: int | None,
         cpus: float, gpus: float, report: Callable[[Result], None] | None, progress: bool) -> list[Result]:
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    resources = ray.cluster_resources()
    if actors is None:
        have = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / cpus
        actors = max(1, min(len(jobs), int(have)))
    upscaler = {**upscaler, "threads": max(1, int(cpus)), "progress": False}
    model = upscaler.get("model")
    if isinstance(model, (str, os.PathLike)) and Path(model).exists():  # workers do not share this directory
        upscaler["model"] = str(Path(model).absolute())
    rows = [{"index": i, "src": str(j.src.absolute()), "dst": str(j.dst.absolute())} for i, j in enumerate(jobs)]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map_batches(FileUpscaler, fn_constructor_kwargs={"upscaler": upscaler, "options": options},
                        batch_size=1, concurrency=actors, num_cpus=cpus, num_gpus=gpus or None)
    bar = None
    if progress:
        import sys

        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="files", unit="file", file=sys.stderr, disable=None)
    results: dict[int, Result] = {}
    try:
        for row in ds.iter_rows():
            i = int(row["index"])
            error = str(row["error"]) or None
            results[i] = Result(jobs[i], error, int(row["frames"]), LightSRError(error) if error else None)
            if bar is not None:
                bar.update(1)
            if report is not None:
                report(results[i])
    finally:
        if bar is not None:
            bar.close()
    return [results[i] for i in range(len(jobs))]
