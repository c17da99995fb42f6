"""Learning curves of training runs from their ``log.jsonl``: a Markdown table, and a figure with ``--plot``.

    python scripts/learning_curve.py training/lksmn_x4_bundled [more runs ...] [--set Set5] [--plot fig.png]

Time is the run's own training clock (``time`` in the log: wall-clock seconds while the process ran, summed
over resumed sessions); validation scores are those the trainer logged (EMA weights when EMA is on).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curves(run: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Per validation set, in the order the trainer logs them: ``(iteration, hours, psnr)`` of every validation;
    a resumed run's repeated iterations keep the last."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        for key, value in rec.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "val" and parts[2] == "psnr":
                points.setdefault(parts[1], {})[int(rec["iter"])] = (float(rec["time"]) / 3600, float(value))
    return {s: [(it, h, p) for it, (h, p) in sorted(pts.items())] for s, pts in points.items()}


def read_curve(run: Path, set_name: str) -> list[tuple[int, float, float]]:
    """``(iteration, hours, psnr)`` of every validation on one set (empty if the run never validated on it)."""
    return read_curves(run).get(set_name, [])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--set", default="Set5")
    p.add_argument("--plot", type=Path)
    p.add_argument("--bicubic", type=float, help="draw the bicubic PSNR as a line")
    args = p.parse_args()
    curves = {run.name: read_curve(run, args.set) for run in args.runs}
    for name, pts in curves.items():
        print(f"\n{name} ({args.set}):\n\n| iteration | hours | PSNR |\n|---|---|---|")
        for it, h, psnr in pts:
            print(f"| {it} | {h:.2f} | {psnr:.3f} |")
    if args.plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name, pts in curves.items():
            ax.plot([h for _, h, _ in pts], [v for _, _, v in pts], marker="o", markersize=3, label=name)
        if args.bicubic is not None:
            ax.axhline(args.bicubic, color="gray", linestyle="--", linewidth=1, label="bicubic")
        ax.set_xlabel("training hours (this 2-core CPU)")
        ax.set_ylabel(f"PSNR (dB), {args.set}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
