"""``lightsr models``: the networks, their sizes, the bundled and the published weights with their scores."""

from __future__ import annotations

import argparse
import json

from lightsr.bundled import (
    DEFAULT_MODEL,
    bundled_metadata,
    bundled_names,
    bundled_path,
    bundled_weights,
    default_upscale_model,
    intended_input,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options."""


def run(args: argparse.Namespace) -> int:
    from lightsr.models.registry import create_model, list_models, model_spec  # here: `--help` loads no torch

    files = [(name, scale, path) for name in bundled_names() for scale, path in sorted(bundled_weights(name).items())]
    arch_of = {path: bundled_metadata(path).get("arch", name) for name, _scale, path in files}
    rows = []
    for name in list_models():
        spec = model_spec(name)
        counts = [f"{create_model(name, scale=s).num_trainable_params():,}" for s in spec.scales]
        bundled = ", ".join(f"×{s}" for s in sorted(bundled_weights(name))) or "—"
        variants = [f"{n} ×{s}" for n, s, path in files if n not in list_models() and arch_of[path] == name]
        bundled += "".join(f"; {v}" for v in variants)
        label = name + (" (default network)" if name == DEFAULT_MODEL else "")
        rows.append((label, " / ".join(counts), bundled, spec.paper))
    print("| model | trainable params ×2 / ×3 / ×4 | bundled weights | paper |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if files:
        print("\nBundled weights (trained by lightsr; Y-PSNR/SSIM on the clean test sets, bicubic in brackets; "
              "`--model NAME`):\n")
        print("| file | made for | iterations | hours | trained on | Set5 | Set14 | B100 |")
        print("|---|---|---|---|---|---|---|---|")
        for _name, scale, path in files:
            meta = bundled_metadata(path)
            scores = json.loads(meta.get("psnr_ssim", "{}"))
            bicubic = json.loads(meta.get("bicubic_psnr_ssim", "{}"))
            cells = [f"{scores[k][0]:.2f} / {scores[k][1]:.4f} ({bicubic[k][0]:.2f})" if k in scores and k in bicubic
                     else "—" for k in ("Set5", "Set14", "B100")]
            made_for = intended_input(path)
            if path == bundled_path(default_upscale_model(scale), scale):
                made_for += " (upscale's default)"
            print(f"| {path.name} | {made_for} | {meta.get('iterations', '?')} | {meta.get('train_hours', '?')} | "
                  f"{meta.get('hardware', '?')} | " + " | ".join(cells) + " |")
    _published()
    return 0


def _published() -> None:
    from lightsr.hub import cached_path, home, published

    table = published()
    if not table:
        return
    print(f"\nPublished weights (downloaded on first use into {home()}, checked by SHA-256; use the name where a "
          "path is expected, e.g. --weights NAME; Y-PSNR/SSIM as lightsr measures them):\n")
    print("| name | network | source | licence | Set5 | Set14 | B100 | cached |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (spec, entry) in sorted(table.items()):
        scores = {s: (p, q) for s, p, q in entry.scores}
        cells = [f"{scores[k][0]:.2f} / {scores[k][1]:.4f}" if k in scores else "—" for k in ("Set5", "Set14", "B100")]
        cached = "yes" if cached_path(entry).is_file() else "no"
        print(f"| {name} | {spec.name} ×{entry.scale} | {entry.source} | {entry.license} | " + " | ".join(cells)
              + f" | {cached} |")
