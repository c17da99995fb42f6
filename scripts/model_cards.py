"""Write ``docs/model_cards.md`` from the bundled files' own metadata and their runs' logs (no number typed by hand).

    python scripts/model_cards.py            # after scripts/bundle_weights.py and scripts/training_state.py save
    python scripts/model_cards.py --comparison hasn_x4_1h elan_light_x4_1h lksmn_x4_1h   # docs/models.md's table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from learning_curve import read_curve  # noqa: E402

from lightsr.bundled import (  # noqa: E402
    bundled_metadata,
    bundled_names,
    bundled_weights,
    default_upscale_model,
    intended_input,
    training_runs,
)
from lightsr.models.registry import create_model  # noqa: E402

SETS = ("Set5", "Set14", "B100")
# Published results of each paper's own model (DIV2K, ~500K iterations on GPUs), PSNR/SSIM on Y.
PAPER: dict[tuple[str, int], tuple[str, dict[str, tuple[float, float]]]] = {
    ("elan_light", 2): ("ELAN paper, Table 2", {"Set5": (38.17, 0.9611), "Set14": (33.94, 0.9207),
                                                "B100": (32.30, 0.9012)}),
    ("elan_light", 3): ("ELAN paper, Table 2", {"Set5": (34.61, 0.9288), "Set14": (30.55, 0.8463),
                                                "B100": (29.21, 0.8081)}),
    ("elan_light", 4): ("ELAN paper, Table 2", {"Set5": (32.43, 0.8975), "Set14": (28.78, 0.7858),
                                                "B100": (27.69, 0.7406)}),
    ("hasn", 4): ("official HASN ×4 weights evaluated by lightsr (`tests/test_evaluate.py`)",
                  {"Set5": (32.176, 0.8947), "Set14": (28.608, 0.7815), "B100": (27.571, 0.7360)}),
}
HOW_PAPER_NUMBERS = (
    "The papers trained for about 500K iterations on DIV2K (800 2K images) with GPUs; these files had hours of a "
    "2-core CPU on the 291 classic images (some then on all 533, see each card's data), so they sit well below "
    "the published numbers. The published checkpoints themselves are reproduced exactly: "
    "`lightsr eval --weights HASN_x4.pth --param-key params` "
    "gives the official HASN figures and FriedRiceLab's ELAN-light ×4 retrain gives 32.438/28.790/27.689 "
    "(`tests/test_evaluate.py`)."
)
DATA_AND_USE = (
    "**Training data and intended use.** Every file was trained by lightsr on classic research images: T91 (Yang "
    "et al. 2010) and BSD200, the training split of the Berkeley Segmentation Dataset (Martin et al. 2001), and, "
    "where a card lists them, BSDS500's test split, Kodak24 and McMaster (each card's data row), all distributed "
    "for research use; a file warm-started or distilled from published weights names them and their licence in "
    "its card. The weights ship under lightsr's MIT licence; whoever redistributes them in a "
    "product should weigh the terms of that data. The files named after a network alone are meant for research "
    "on lightweight SR (a baseline to compare with or fine-tune from) and for upscaling clean images: the LR "
    "images they learned from were made by MATLAB's bicubic downscale, so JPEG blocks and sensor noise in the "
    "input are sharpened, not removed. `lksmn_real` learned from LR images degraded as photos are (blur, "
    "resizing, noise, JPEG) and is meant for photos and web images; on clean downscaled images it scores a little "
    "below the bicubic-trained file. `elan_light_real` learned the same degradations, fine-tuned from Fried Rice "
    "Lab's DIV2K-trained ELAN-light: better on every input, about three times slower than `lksmn_real`. All of "
    "them invent plausible detail and must not be used to recover facts (faces, licence plates, text) from "
    "low-resolution evidence."
)


def card(name: str, scale: int, path: Path) -> str:
    meta = bundled_metadata(path)
    scores = json.loads(meta["psnr_ssim"])
    bicubic = json.loads(meta["bicubic_psnr_ssim"])
    arch = meta.get("arch", name)
    params = create_model(arch, scale=scale).num_trainable_params()
    run = meta["run"]
    default = bundled_weights(default_upscale_model(scale)).get(scale) == path
    title = f"`{path.name}`" + (f" — `upscale`'s default at ×{scale}" if default else "")
    stages = training_runs(meta)  # decoded once; every section below reads them
    lines = [f"## {title}", ""]
    init = meta.get("init_from", "")
    init = "" if init in ("", "null") else init
    iters = int(meta["iterations"])
    schedule = ""
    run_config = ROOT / "training" / run / "config.yaml"
    if run_config.is_file():
        import yaml

        planned = int(yaml.safe_load(run_config.read_text())["train"]["max_iters"])
        if iters < planned:
            schedule = f" (a checkpoint part-way through its {planned:,}-iteration schedule)"
    rows = [
        ("network", f"{arch} ×{scale}, {params:,} trainable parameters, {path.stat().st_size / 1e6:.2f} MB"),
        ("made for", meta.get("intended_input", "clean downscaled images (MATLAB bicubic LR)")),
        ("data", _data_text(stages)),
        ("config", f"[`{_config(run)}`](../{_config(run)}), "
                   f"{meta['patch_size']}×{meta['patch_size']} HR patches, batch {meta['batch_size']}"),
        ("degradations", _degradation_text(stages)),
        ("start", f"warm start from `{init}`{_then(init)}" + (" (new upsampler)" if _fresh_upsampler(run) else "")
         if init else "random initialisation"),
        *([("teacher", _teacher_text(stages))] if any(st.get("teacher") for st in stages) else []),
        *([("origin and licence", _origin_text(meta))] if "derived_from" in meta else []),
        ("training", _training_text(meta, stages, iters, schedule)),
        ("weights", f"{meta['weights']} weights of the last checkpoint (`{meta['checkpoint']}`); the test sets did "
                    "not pick them"),
        ("software", f"lightsr {meta.get('lightsr_version', '?')}, torch {meta['torch']}"),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    paper = PAPER.get((arch, scale)) if name == arch else None
    lines += [f"| ×{scale}, Y PSNR / SSIM | " + " | ".join(SETS) + " |", "|---" * (len(SETS) + 1) + "|"]
    lines.append("| **this file** | " + " | ".join(f"**{scores[s][0]:.2f}** / {scores[s][1]:.4f}" for s in SETS)
                 + " |")
    lines.append("| gain over bicubic | " + " | ".join(f"{scores[s][0] - bicubic[s][0]:+.2f} dB" for s in SETS)
                 + " |")
    lines.append("| bicubic | " + " | ".join(f"{bicubic[s][0]:.2f} / {bicubic[s][1]:.4f}" for s in SETS) + " |")
    if paper:
        lines.append(f"| paper ({paper[0]}) | " + " | ".join(
            f"{paper[1][s][0]:.2f} / {paper[1][s][1]:.4f}" for s in SETS) + " |")
    elif name == arch:
        lines.append("| paper | no published numbers could be checked for this network and scale |")
    if "degraded_psnr_ssim" in meta:
        lines += ["", *_degraded_table(meta, scale)]
    for st in stages:
        lines += _curve(st["run"], f" of run `{st['run']}`" if len(stages) > 1 else "", st["iterations"])
    return "\n".join(lines)


def _config(run: str) -> str:
    """The config a run was made with, relative to the repository (configs/ or one of its folders)."""
    found = sorted((ROOT / "configs").rglob(f"{run}.yaml"))
    return (found[0].relative_to(ROOT) if found else Path("configs") / f"{run}.yaml").as_posix()


def _fresh_upsampler(run: str) -> bool:
    """Whether the run's warm start kept the fresh init of scale-dependent tensors (the trainer's log says so)."""
    log = ROOT / "training" / run / "log.jsonl"
    events = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    return any(e.get("event") == "init_from" and "kept the fresh init" in e.get("message", "") for e in events)


def _then(init_from: str) -> str:
    """A warm start from a bundled file names a path whose contents a later bundle may have replaced."""
    return " as bundled then" if Path(init_from).parts[:3] == ("src", "lightsr", "weights") else ""


def _data_text(stages: list[dict]) -> str:
    """The training images of every run behind the file (their counts where the trainer logged them)."""
    texts = []
    for st in stages:
        data = st.get("train_data") or _run_data(st["run"])
        count = (f"{n} images" if (n := st.get("train_images")) else
                 "the 291 classic images" if data == CLASSIC_DATA else None)
        texts.append(f"{data} ({count}; images smaller than the patch are skipped)" if data and count else
                     f"{data} (images smaller than the patch are skipped)" if data else "not recorded")
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"run `{st['run']}`: {t}" for st, t in zip(stages, texts, strict=True))


CLASSIC_DATA = "T91, BSD200"


def _run_data(run: str) -> str | None:
    """The training folders of a committed run, from its config (records bundled before they kept them)."""
    cfg = ROOT / "training" / run / "config.yaml"
    if not cfg.is_file():
        return None
    import yaml

    dirs = ((yaml.safe_load(cfg.read_text()) or {}).get("data") or {}).get("hr_dirs") or []
    return ", ".join(Path(d).name for d in dirs) or None


def _teacher_text(stages: list[dict]) -> str:
    parts = [f"run `{st['run']}`: distilled from `{t['teacher']}` ({t['arch']} ×{t['scale']}, file SHA-256 "
             f"`{t['sha256'][:12]}…`), loss L1(HR) + {t.get('weight', 1)}·L1(teacher), the teacher in "
             f"{t.get('precision', 'fp32')} on the student's LR batch" for st in stages if (t := st.get("teacher"))]
    return "; ".join(parts)


def _origin_text(meta: dict[str, str]) -> str:
    parts = [f"{o['role']}: `{o['name']}`, {o['source']}, licence {o['license']}"
             for o in json.loads(meta["derived_from"])]
    return "; ".join(parts) + f" — the licence text ships in `{meta.get('notice', 'lightsr/weights/NOTICE')}`"


def _curve(run: str, which: str, upto: int) -> list[str]:
    """The run's validation curve up to the checkpoint the file came from (a run may go on after bundling)."""
    store = ROOT / "training" / run
    if not (store / "log.jsonl").is_file():
        return []
    pts = [p for p in read_curve(store, "Set5") if p[0] <= upto]
    if not pts:
        return []
    val_degrade = None
    run_config = store / "config.yaml"
    if run_config.is_file():
        import yaml

        val_degrade = (yaml.safe_load(run_config.read_text()).get("val") or {}).get("degrade")
    inputs = f", LR degraded by `{val_degrade}`" if val_degrade else ""
    step = max(1, len(pts) // 12)
    shown = pts[::step] + ([pts[-1]] if (len(pts) - 1) % step else [])
    return ["", f"Learning curve{which} (Set5{inputs}, EMA weights, logged by the trainer):", "",
            "| iteration | " + " | ".join(f"{it:,}" for it, _, _ in shown) + " |",
            "|---" * (len(shown) + 1) + "|",
            "| hours | " + " | ".join(f"{h:.2f}" for _, h, _ in shown) + " |",
            "| Set5 PSNR | " + " | ".join(f"{v:.2f}" for _, _, v in shown) + " |"]


CPU_HOURS_HOW = ("user + system time of the trainer and its data worker where it was measured; where marked ~, "
                 "wall time × threads, which counts pauses and not the data worker")


def _cpu_hours(st: dict) -> tuple[float, bool] | None:
    """A run's CPU-hours as bundled (``False``: measured or estimated by whoever bundled it), else its wall time ×
    threads × processes (``True``: an estimate made here), the threads and processes from the trainer's state of
    the checkpoint the file came from (committed with the run; the threads from the run's config where an older
    state lacks them), else None."""
    if "train_cpu_hours" in st:
        return st["train_cpu_hours"], False
    run = ROOT / "training" / st["run"]
    state = run / "checkpoints" / str(st.get("checkpoint", "")) / "state.pt"
    if not st.get("checkpoint") or "train_hours" not in st or not state.is_file():
        return None
    import torch
    import yaml

    try:
        saved = torch.load(state, weights_only=True, map_location="cpu")
        config = saved.get("config") or (yaml.safe_load((run / "config.yaml").read_text())
                                         if (run / "config.yaml").is_file() else None)
        threads, ranks = config["train"]["threads"], saved.get("world_size", 1)
    except Exception:  # an older or damaged state: the card then gives no figure rather than a guess
        return None
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (threads, ranks)):
        return None  # threads 0 is "all cores" of a machine the record does not count
    return st["train_hours"] * threads * ranks, True


def _training_text(meta: dict[str, str], stages: list[dict], iters: int, schedule: str) -> str:
    cpu = [_cpu_hours(st) for st in stages]
    cpu_text = (f"; {'~' if any(c[1] for c in cpu) else ''}{sum(c[0] for c in cpu):.1f} CPU-hours "
                f"({CPU_HOURS_HOW})" if all(c is not None for c in cpu) else "")
    if len(stages) == 1:
        return f"{iters:,} iterations{schedule}, {float(meta['train_hours']):.2f} h of wall-clock on " \
               f"{meta['hardware']}{cpu_text}"
    parts = [f"run `{st['run']}` ([config](../{_config(st['run'])})): {st['iterations']:,} iterations"
             + (schedule if st is stages[-1] else "") + f", {st['train_hours']:.2f} h on {st['hardware']}"
             + (f", {'~' if c[1] else ''}{c[0]:.1f} CPU-hours" if c is not None else "")
             + (f", from `{st['init_from']}`{_then(st['init_from'])}" if st.get("init_from") else "")
             for st, c in zip(stages, cpu, strict=True)]
    total_it = sum(st["iterations"] for st in stages)
    total_h = sum(st["train_hours"] for st in stages)
    return (f"{len(stages)} runs, each warm-started from the one before, {total_it:,} iterations and "
            f"{total_h:.2f} h of wall-clock in these runs{cpu_text}: " + "; ".join(parts))


def _degradation_text(stages: list[dict]) -> str:
    texts = []
    for st in stages:
        deg = st.get("degradation") or {"type": "bicubic"}
        if deg.get("type") != "real":
            text = "none: MATLAB-bicubic LR patches (the papers' track)"
        else:
            text = ("the real-world track (`lightsr.degradations`, Real-ESRGAN's second-order model), settings "
                    f"`{json.dumps(deg, separators=(', ', ': '))}`")
        texts.append(text)
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"run `{st['run']}`: {t}" for st, t in zip(stages, texts, strict=True))


def _made_for(bundled: str) -> str:
    """What a bundled file (``NAME_xSCALE``) was made for, from its own metadata."""
    name, _, scale = bundled.rpartition("_x")
    path = bundled_weights(name).get(int(scale)) if scale.isdigit() else None
    return intended_input(path) if path else "not bundled"


def _degraded_table(meta: dict[str, str], scale: int) -> list[str]:
    """Clean and degraded inputs: bicubic, the baseline file named in the metadata and this file, per set."""
    ours, bic = json.loads(meta["psnr_ssim"]), json.loads(meta["bicubic_psnr_ssim"])
    d_ours, d_bic = json.loads(meta["degraded_psnr_ssim"]), json.loads(meta["degraded_bicubic_psnr_ssim"])
    base_name = meta.get("baseline", "")
    base = json.loads(meta.get("baseline_psnr_ssim", "{}"))
    d_base = json.loads(meta.get("degraded_baseline_psnr_ssim", "{}"))
    base_label = f"`{base_name}` ({_made_for(base_name)})"
    lines = [f"Clean and degraded LR inputs (`lightsr eval --degrade SPEC`: applied to the MATLAB-made LR images, "
             f"seeded per image name), ×{scale}, Y PSNR / SSIM; the baseline as it was when this file was bundled:",
             "",
             "| LR | model | " + " | ".join(SETS) + " |", "|---|---" + "|---" * len(SETS) + "|"]
    conditions = [("clean", bic, base, ours)] + [(d, d_bic[d], d_base.get(d, {}), d_ours[d]) for d in d_ours]
    for cond, b, m, o in conditions:
        rows = [("bicubic", b)] + ([(base_label, m)] if m else []) + [("**this file**", o)]
        for label, sc in rows:
            lines.append(f"| {cond} | {label} | " + " | ".join(f"{sc[s][0]:.2f} / {sc[s][1]:.4f}" for s in SETS)
                         + " |")
    return lines


def comparison_table(runs: list[str]) -> str:
    """docs/models.md's table of runs trained under one budget, from each run's ``training/<run>/scores.json``."""
    from lightsr.profile import profile

    lines = ["| network | params | MACs (720p) | iterations | hours | Set5 | Set14 | B100 | Set5 gain |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        rec = json.loads((ROOT / "training" / run / "scores.json").read_text())
        prof = profile(create_model(rec["arch"], scale=rec["scale"]))
        sc, bi = rec["psnr_ssim"], rec["bicubic_psnr_ssim"]
        lines.append(f"| {rec['arch']} | {prof.params / 1e3:.0f}K | {prof.macs / 1e9:.1f}G | {rec['iterations']:,} | "
                     f"{rec['train_hours']:.2f} | " + " | ".join(f"{sc[s][0]:.2f} / {sc[s][1]:.4f}" for s in SETS)
                     + f" | {sc['Set5'][0] - bi['Set5'][0]:+.2f} dB |")
    rec = json.loads((ROOT / "training" / runs[0] / "scores.json").read_text())
    lines.append("| bicubic | — | — | — | — | " + " | ".join(
        f"{rec['bicubic_psnr_ssim'][s][0]:.2f} / {rec['bicubic_psnr_ssim'][s][1]:.4f}" for s in SETS) + " | — |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--comparison"]:
        print(comparison_table(sys.argv[2:]))
        return
    files = [(n, s, p) for n in bundled_names() for s, p in sorted(bundled_weights(n).items())]
    files.sort(key=lambda t: (t[0] != default_upscale_model(4), t[0], -t[1]))
    out = ["# Model cards", "",
           "One card per weights file shipped inside the package (`src/lightsr/weights/`, listed by "
           "`lightsr models`). Every score below is read from the file's own metadata, written by "
           "`scripts/bundle_weights.py` when it evaluated the file under the papers' protocol "
           "(MATLAB-made LR images, Y channel, crop = scale), and `tests/test_bundled.py` re-checks the Set5 "
           "figures; the learning curves, and CPU-hours a file does not record, come from the training runs "
           "committed under `training/`. This page is generated by `scripts/model_cards.py` (`--check`: "
           "whether it is up to date).", "", HOW_PAPER_NUMBERS, "", DATA_AND_USE, ""]
    out += [card(n, s, p) + "\n" for n, s, p in files]
    dst = ROOT / "docs" / "model_cards.md"
    text = "\n".join(out).rstrip() + "\n"
    if sys.argv[1:2] == ["--check"]:
        if not dst.is_file() or dst.read_text() != text:
            raise SystemExit(f"{dst.relative_to(ROOT)}: not what the shipped files say; run scripts/model_cards.py")
        print(f"{dst.relative_to(ROOT)} is up to date ({len(files)} cards)")
        return
    dst.write_text(text)
    print(f"wrote {dst} ({len(files)} cards)")


if __name__ == "__main__":
    main()
