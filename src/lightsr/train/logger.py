"""What a run reports: a JSON-lines file of every logged value, TensorBoard when installed, a tqdm bar.

Only rank 0 creates a :class:`RunLogger`; the other ranks get a :class:`NullLogger`. ``log.jsonl`` is appended to
(never rewritten): a resumed run adds a ``{"event": "resume"}`` line and then repeats the iterations after its
checkpoint, so readers should keep the last record of each iteration.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("lightsr")

LINE_EVERY_S = 60.0  # progress lines in a log file (stderr not a terminal)


class NullLogger:
    def record(self, values: dict[str, Any]) -> None:
        pass

    def event(self, name: str, message: str | None = None, **values: Any) -> None:
        pass

    def progress(self, iteration: int, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger(NullLogger):
    def __init__(self, run_dir: Path, total: int, initial: int, progress: bool, tensorboard: bool) -> None:
        from tqdm import tqdm

        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "log.jsonl"
        self._file = self.path.open("a", buffering=1, encoding="utf-8")  # line-buffered: survives SIGKILL
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(log_dir=str(run_dir / "tb"))
            except ImportError:
                log.info("tensorboard is not installed; logging to %s only", self.path)
        # A terminal gets a bar; a log file (not a terminal) gets a plain line every LINE_EVERY_S seconds instead
        # of carriage-return redraws.
        tty = sys.stderr.isatty()
        self._bar = tqdm(total=total, initial=initial, disable=not (progress and tty), file=sys.stderr, unit="it",
                         dynamic_ncols=True, smoothing=0.05, mininterval=0.5, desc="train")
        self._lines = progress and not tty
        self._total = total
        self._last = initial
        self._line_at = time.monotonic()
        self._line_iter = initial

    def record(self, values: dict[str, Any]) -> None:
        self._file.write(json.dumps(values, default=_jsonable) + "\n")
        if self._tb is not None and "iter" in values:
            for k, v in values.items():
                if k not in ("iter", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and math.isfinite(v):
                    self._tb.add_scalar(k, v, values["iter"])

    def event(self, name: str, message: str | None = None, **values: Any) -> None:
        self.record({"event": name, **values, **({"message": message} if message else {})})
        if message:
            self._bar.write(f"lightsr train: {message}", file=sys.stderr)

    def progress(self, iteration: int, **postfix: Any) -> None:
        self._bar.set_postfix(postfix, refresh=False)
        self._bar.update(iteration - self._last)
        self._last = iteration
        now = time.monotonic()
        if self._lines and (now - self._line_at >= LINE_EVERY_S or iteration >= self._total):
            rate = (iteration - self._line_iter) / max(now - self._line_at, 1e-9)
            values = ", ".join(f"{k} {v}" for k, v in postfix.items())
            print(f"lightsr train: iteration {iteration}/{self._total} ({rate:.2f} it/s)"
                  + (f", {values}" if values else ""), file=sys.stderr, flush=True)
            self._line_at, self._line_iter = now, iteration

    def close(self) -> None:
        self._bar.close()
        try:
            self._file.close()
        except OSError:  # a full disk: the error that stopped the run is the one to report
            pass
        if self._tb is not None:
            self._tb.close()


def _jsonable(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
