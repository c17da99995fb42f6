"""``lightsr models``: the networks, their sizes, the bundled and the published weights with their scores.

Three views of one set of records: a compact text view that fits a 100-column terminal (the default: long cells
wrap), the full Markdown tables (``--wide``, for pasting into documents) and JSON (``--json``, for programs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from collections.abc import Iterable
from typing import Any

from lightsr.bundled import (
    DEFAULT_MODEL,
    bundled_metadata,
    bundled_names,
    bundled_path,
    bundled_weights,
    default_upscale_model,
    intended_input,
    training_runs,
)

SETS = ("Set5", "Set14", "B100")
MAX_WIDTH = 100  # the compact view never exceeds this many columns (fewer on a narrower terminal)
MIN_WIDTH = 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    view = p.add_mutually_exclusive_group()
    view.add_argument("--wide", action="store_true",
                      help="full Markdown tables (papers, hardware, sources, SSIM and bicubic scores) instead of the "
                           "compact view that fits 100 columns")
    view.add_argument("--json", action="store_true",
                      help="every field as JSON: networks, bundled files (with their training metadata) and "
                           "published weights")


def run(args: argparse.Namespace) -> int:
    records = collect()
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    elif args.wide:
        print(render_wide(records))
    else:
        print(render_compact(records, terminal_width()))
    return 0


def terminal_width() -> int:
    """Columns for the compact view: the terminal's (``COLUMNS`` or the tty), at most 100 and at least 60."""
    cols = shutil.get_terminal_size(fallback=(MAX_WIDTH, 24)).columns
    return max(MIN_WIDTH, min(MAX_WIDTH, cols))


# ------------------------------------------------------------------------------------------- the records


def collect() -> dict[str, Any]:
    """Everything the views show, as plain data (the ``--json`` output)."""
    from lightsr.hub import cached_path, home, published  # here, not above: `--help` loads no torch
    from lightsr.models.registry import create_model, list_models, model_spec

    files = [(name, scale, path) for name in bundled_names() for scale, path in sorted(bundled_weights(name).items())]
    meta = {path: bundled_metadata(path) for _name, _scale, path in files}
    networks = []
    for name in list_models():
        spec = model_spec(name)
        variants = [{"name": n, "scale": s} for n, s, path in files
                    if n not in list_models() and meta[path].get("arch", n) == name]
        networks.append({
            "name": name,
            "default": name == DEFAULT_MODEL,
            "paper": spec.paper,
            "params": {str(s): create_model(name, scale=s).num_trainable_params() for s in spec.scales},
            "bundled_scales": sorted(bundled_weights(name)),
            "bundled_variants": variants,
        })
    bundled = []
    for name, scale, path in files:
        m = meta[path]
        # A file continued from an earlier run's weights owes its quality to every run behind it: the totals.
        runs = [{"run": r.get("run"), "iterations": r.get("iterations"), "train_hours": r.get("train_hours"),
                 "hardware": r.get("hardware")} for r in training_runs(m)]
        scores = json.loads(m.get("psnr_ssim", "{}"))
        bicubic = json.loads(m.get("bicubic_psnr_ssim", "{}"))
        bundled.append({
            "name": f"{name}_x{scale}",
            "file": path.name,
            "network": m.get("arch", name),
            "scale": scale,
            "made_for": intended_input(path),
            "upscale_default": path == bundled_path(default_upscale_model(scale), scale),
            "iterations": _total(r["iterations"] for r in runs),
            "train_hours": _total(r["train_hours"] for r in runs),
            "hardware": "; ".join(dict.fromkeys(r["hardware"] for r in runs if r["hardware"])) or None,
            "runs": runs,
            "psnr_ssim": {k: scores[k] for k in SETS if k in scores},
            "bicubic_psnr_ssim": {k: bicubic[k] for k in SETS if k in bicubic},
        })
    pub = []
    for name, (spec, entry) in sorted(published().items()):
        scores = {s: [p, q] for s, p, q in entry.scores}
        pub.append({
            "name": name,
            "network": spec.name,
            "scale": entry.scale,
            "source": entry.source,
            "license": entry.license,
            "url": entry.url,
            "sha256": entry.sha256,
            "psnr_ssim": {k: scores[k] for k in SETS if k in scores},
            "cached": cached_path(entry).is_file(),
            "cache_path": str(cached_path(entry)),
        })
    return {"default_network": DEFAULT_MODEL, "cache": str(home()), "networks": networks, "bundled": bundled,
            "published": pub}


def _total(values: Iterable[int | float | None]) -> int | float | None:
    """The sum over a file's runs, or None where any run's figure is unknown."""
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    total = sum(values)  # type: ignore[arg-type]
    return round(total, 3) if isinstance(total, float) else total


def _params(net: dict[str, Any]) -> str:
    return " / ".join(f"{n:,}" for n in net["params"].values())


def _bundled_cell(net: dict[str, Any], sep: str = ", ") -> str:
    cell = sep.join(f"×{s}" for s in net["bundled_scales"]) or "—"
    return cell + "".join(f"; {v['name']} ×{v['scale']}" for v in net["bundled_variants"])


def _psnr(scores: dict[str, list[float]], ssim: bool = False) -> list[str]:
    return [("—" if k not in scores else f"{scores[k][0]:.2f} / {scores[k][1]:.4f}" if ssim else f"{scores[k][0]:.2f}")
            for k in SETS]


# ------------------------------------------------------------------------------------------- compact view


def render_compact(records: dict[str, Any], width: int = MAX_WIDTH) -> str:
    """Plain-text tables no wider than ``width``: long cells wrap inside their column."""
    out = [_wrap("Networks (--model NAME): trainable parameters at ×2 / ×3 / ×4, bundled weights; * the default "
                 "network. `lightsr models --wide` adds the papers' full titles, hardware and SSIM.", width), ""]
    rows = [[net["name"] + (" *" if net["default"] else ""), _params(net), _bundled_cell(net, " "),
             _short_paper(net["paper"])] for net in records["networks"]]
    out += [_table(["model", "params ×2 / ×3 / ×4", "bundled", "paper"], rows, width, keep=(1,)), ""]
    if records["bundled"]:
        out += [_wrap("Bundled weights (trained by lightsr: iterations and hours of the runs each file records; "
                      "Y-PSNR in dB on the clean test sets; --model NAME, or --weights NAME_xSCALE):", width), ""]
        rows = [[b["name"], b["made_for"] + (" — upscale's default" if b["upscale_default"] else ""),
                 f"{b['iterations']:,}" if isinstance(b["iterations"], int) else str(b["iterations"] or "?"),
                 f"{b['train_hours']:.1f}" if isinstance(b["train_hours"], (int, float)) else "?",
                 *_psnr(b["psnr_ssim"])] for b in records["bundled"]]
        out += [_table(["name", "made for", "iters", "hours", *SETS], rows, width, right=(2, 3, 4, 5, 6)), ""]
    if records["published"]:
        out += [_wrap("Published weights (--weights NAME; downloaded on first use into the cache below, checked by "
                      "SHA-256; Y-PSNR in dB as lightsr measures it):", width), _wrap(records["cache"], width), ""]
        rows = [[p["name"], f"{p['network']} ×{p['scale']}", p["license"], *_psnr(p["psnr_ssim"]),
                 "yes" if p["cached"] else "no"] for p in records["published"]]
        out += [_table(["name", "network", "licence", *SETS, "cached"], rows, width, right=(3, 4, 5))]
    return "\n".join(out).rstrip()


def _short_paper(paper: str) -> str:
    """``Authors, Title, Venue Year (note)`` → ``Venue Year (note)``: the title is the --wide view's."""
    head, _, note = paper.partition(" (")
    venue = head.rsplit(", ", 1)[-1]
    return venue + (f" ({note}" if note else "")


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def _table(header: list[str], rows: list[list[str]], width: int, right: tuple[int, ...] = (),
           keep: tuple[int, ...] = ()) -> str:
    """A plain-text table within ``width`` columns: the widest wrappable column shrinks until the table fits;
    columns in ``keep`` (numbers) wrap only when nothing else can give way."""
    gap = 2
    cols = len(header)
    natural = [max(len(str(r[i])) for r in [header, *rows]) for i in range(cols)]
    # A column may shrink to its longest word (its header included), never below.
    floor = [max(len(w) for r in [header, *rows] for w in (str(r[i]).split() or [""])) for i in range(cols)]
    widths = natural[:]
    while sum(widths) + gap * (cols - 1) > width:
        shrinkable = ([i for i in range(cols) if widths[i] > floor[i] and i not in keep]
                      or [i for i in range(cols) if widths[i] > floor[i]])
        if not shrinkable:
            break
        i = max(shrinkable, key=lambda j: widths[j])
        widths[i] -= 1
    lines = []
    for r, row in enumerate([header, *rows]):
        cells = [textwrap.wrap(str(c), widths[i], break_long_words=True, break_on_hyphens=False) or [""]
                 for i, c in enumerate(row)]
        for k in range(max(len(c) for c in cells)):
            parts = []
            for i, c in enumerate(cells):
                text = c[k] if k < len(c) else ""
                parts.append(text.rjust(widths[i]) if i in right and r > 0 else text.ljust(widths[i]))
            lines.append((" " * gap).join(parts).rstrip())
        if r == 0:
            lines.append((" " * gap).join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- wide view


def render_wide(records: dict[str, Any]) -> str:
    """The full Markdown tables: every field, one row per line however long."""
    out = ["| model | trainable params ×2 / ×3 / ×4 | bundled weights | paper |", "|---|---|---|---|"]
    for net in records["networks"]:
        label = net["name"] + (" (default network)" if net["default"] else "")
        out.append(f"| {label} | {_params(net)} | {_bundled_cell(net)} | {net['paper']} |")
    if records["bundled"]:
        out += ["", "Bundled weights (trained by lightsr: iterations and hours of the runs each file records; "
                "Y-PSNR/SSIM on the clean test sets, bicubic in brackets; `--model NAME`):", "",
                "| file | made for | iterations | hours | trained on | Set5 | Set14 | B100 |",
                "|---|---|---|---|---|---|---|---|"]
        for b in records["bundled"]:
            cells = [f"{b['psnr_ssim'][k][0]:.2f} / {b['psnr_ssim'][k][1]:.4f} ({b['bicubic_psnr_ssim'][k][0]:.2f})"
                     if k in b["psnr_ssim"] and k in b["bicubic_psnr_ssim"] else "—" for k in SETS]
            made_for = b["made_for"] + (" (upscale's default)" if b["upscale_default"] else "")
            out.append(f"| {b['file']} | {made_for} | {_text(b['iterations'])} | {_text(b['train_hours'])} | "
                       f"{b['hardware'] or '?'} | " + " | ".join(cells) + " |")
    if records["published"]:
        out += ["", f"Published weights (downloaded on first use into {records['cache']}, checked by SHA-256; use the "
                "name where a path is expected, e.g. --weights NAME; Y-PSNR/SSIM as lightsr measures them):", "",
                "| name | network | source | licence | Set5 | Set14 | B100 | cached |",
                "|---|---|---|---|---|---|---|---|"]
        for p in records["published"]:
            out.append(f"| {p['name']} | {p['network']} ×{p['scale']} | {p['source']} | {p['license']} | "
                       + " | ".join(_psnr(p["psnr_ssim"], ssim=True)) + f" | {'yes' if p['cached'] else 'no'} |")
    return "\n".join(out)


def _text(value: Any) -> str:
    return "?" if value is None else str(value)
