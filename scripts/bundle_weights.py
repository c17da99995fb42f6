"""Turn a training run into a bundled weights file: ``src/lightsr/weights/<name>_x<scale>.safetensors``.

Takes the EMA weights of the run's newest complete checkpoint (not the best-on-Set5 one: the test sets must not
pick the model they then score), evaluates them and the bicubic baseline on Set5/Set14/B100 under the papers'
protocol, and writes the file with its provenance and scores in the safetensors metadata (`lightsr models`
prints them). The scores also go to ``<run store>/scores.json`` for the model cards.

    python scripts/bundle_weights.py runs/lksmn_x4_bundled --hardware "2-core AMD EPYC CPU, 2 threads"

A run on the real-world degradation track is bundled under its own name (``--name lksmn_real``) and is also
scored on degraded LR images (``--degrade``, as ``lightsr eval --degrade`` makes them), beside bicubic and the
bicubic-trained file it should beat there (``--baseline``). A run that warm-starts from a committed run's
checkpoint (``init_from: training/<run>/checkpoints/...``) records that run's iterations, hours and settings
(``previous``), so that a file trained in stages states what all of them took.

    python scripts/bundle_weights.py runs/lksmn_real_x4 --name lksmn_real --baseline lksmn_x4 \
        --intended-input "photos: JPEG, noise, slight blur" --hardware "..."

Nothing shipped gets worse: a file that exists already is replaced only when the new one scores higher (Y-PSNR)
on every set and degradation both record, else the script exits naming where it is not, and writes nothing (the
file, scores.json); ``--allow-worse`` replaces it anyway (a deliberate change of recipe, stated in the commit).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import torch
import yaml

from lightsr.bundled import RUN_KEYS, bundled_metadata, run_record
from lightsr.checkpoints import load_model, save_model
from lightsr.evaluate import evaluate
from lightsr.hub import file_sha256
from lightsr.models.registry import specs
from lightsr.sources import load_model as load_named
from lightsr.sources import weights_file
from lightsr.train.state import EMA_FILE, MODEL_FILE, STATE_FILE, latest_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DEGRADED = ("jpeg:75", "jpeg:40", "noise:10,jpeg:60")


def _scores(model: torch.nn.Module | None, data: Path, sets: list[str], scale: int,
            degrade: str | None = None) -> dict[str, list[float]]:
    return {r.set: [round(r.psnr, 4), round(r.ssim, 4)]
            for r in evaluate(model, data, sets, scale, progress=False, degrade=degrade)}


_KEEP = (*RUN_KEYS, "previous")


def _previous_run(init_from: str) -> dict[str, object] | None:
    """The record of the run a warm start came from, so that a file trained in stages says what all of them took:
    a committed run (``training/<run>/checkpoints/...``) or a bundled file (its own metadata holds its runs)."""
    parts = Path(init_from).parts
    if len(parts) >= 3 and parts[0] == "training":
        scores = ROOT / "training" / parts[1] / "scores.json"
        if not scores.is_file():
            raise SystemExit(f"{init_from}: warm start from a committed run without {scores}")
        prev = json.loads(scores.read_text())
        return {k: prev[k] for k in _KEEP if k in prev}
    path = ROOT / init_from
    if path.suffix == ".safetensors" and path.is_file() and "run" in (meta := bundled_metadata(path)):
        prev = run_record(meta)
        if lost := [k for k in _KEEP if k in meta and k not in prev]:
            raise SystemExit(f"{path}: malformed provenance {', '.join(lost)} in its metadata; not bundling a file "
                             "whose record would silently lose it")
        return prev
    return None


def _origins(files: dict[str, Path]) -> list[dict[str, str]]:
    """Published weights a file derives from, by role ("warm start", "teacher"): a file whose SHA-256 is a
    published entry's, or a teacher whose lightsr metadata lists origins of its own (one fine-tuned from such)."""
    table = {w.sha256: w for spec in specs() for w in spec.published}
    out: list[dict[str, str]] = []
    for role, path in files.items():
        w = table.get(file_sha256(path))
        if w is not None:
            out.append({"role": role, "name": w.name, "license": w.license, "source": w.source})
        elif role == "teacher" and path.suffix == ".safetensors":  # a warm start's come with ``previous``
            for o in json.loads(bundled_metadata(path).get("derived_from", "[]")):
                out.append({**o, "role": f"{role} ← {o['role']}"})
    return out


def _psnr(table: object, where: str) -> dict[str, float]:
    """``{set: psnr}`` of a recorded ``{set: [psnr, ssim]}``; ValueError naming ``where`` when it is not one."""
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{where}: not a table of sets")
    out = {}
    for name, v in table.items():
        if (not isinstance(name, str) or not name or not isinstance(v, list) or not v or isinstance(v[0], bool)
                or not isinstance(v[0], (int, float))):
            raise ValueError(f"{where} {name!r}: not [psnr, ssim]")
        out[name] = float(v[0])
    return out


def _conditions(scores: object, degraded: object) -> dict[str, dict[str, float]]:
    """Y-PSNR by condition ("" clean, else the degradation) and set, from a record's two score tables."""
    out = {"": _psnr(scores, "psnr_ssim")}
    if not isinstance(degraded, dict):
        raise ValueError("degraded_psnr_ssim: not a table of degradations")
    for d, table in degraded.items():
        if not isinstance(d, str) or not d:  # "" would stand for the clean scores
            raise ValueError(f"degraded_psnr_ssim: a degradation named {d!r}")
        out[d] = _psnr(table, f"degraded_psnr_ssim {d}")
    return out


def _against(new: dict[str, object], path: Path) -> list[tuple[str, float, float]]:
    """The new record's Y-PSNR beside the one the bundled file at ``path`` records, for every set and degradation
    the file records: ``("B100 jpeg:40", new, old)``, new NaN where the new record lacks it (a narrower --degrade,
    a bicubic-track run under a real-photo name): what was scored before must be scored again to be replaced."""
    try:
        meta = bundled_metadata(path)
    except Exception as e:  # safetensors raises its own error types for a file that is not one
        raise SystemExit(f"{path}: not a readable safetensors file ({e!r}); not replacing it blind") from e
    try:
        old = _conditions(json.loads(meta["psnr_ssim"]), json.loads(meta.get("degraded_psnr_ssim", "{}")))
    except (KeyError, ValueError) as e:  # json's decode error is a ValueError
        raise SystemExit(f"{path}: its recorded scores are malformed ({e!r}); not comparing against them") from e
    mine = _conditions(new["psnr_ssim"], new.get("degraded_psnr_ssim", {}))
    return [(f"{s} {d}".strip(), mine.get(d, {}).get(s, math.nan), v) for d, sets in old.items()
            for s, v in sets.items()]


def _log(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run directory (runs/NAME or training/NAME)")
    p.add_argument("--hardware", required=True, help="what trained it, e.g. '2-core AMD EPYC CPU, 2 threads'")
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "benchmark")
    p.add_argument("--out", type=Path, default=ROOT / "src" / "lightsr" / "weights")
    p.add_argument("--scores", type=Path, help="where to write scores.json (default: training/NAME/)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the evaluation")
    p.add_argument("--name", help="the file's name before _x<scale> (default: the network's)")
    p.add_argument("--intended-input", help="what the file is for, shown by `lightsr models` (default: clean "
                                            "downscaled images)")
    p.add_argument("--degrade", nargs="*", default=list(DEGRADED),
                   help="degradations to score a real-world-track run on (default: %(default)s)")
    p.add_argument("--baseline", help="bundled weights scored beside it on the degraded inputs, e.g. lksmn_x4")
    p.add_argument("--cpu-hours", type=float, help="CPU time the training used, if measured (e.g. by time -v)")
    p.add_argument("--allow-worse", action="store_true",
                   help="replace an existing file even where the new one scores lower")
    args = p.parse_args()

    ckpt = latest_checkpoint(args.run / "checkpoints")
    if ckpt is None:
        raise SystemExit(f"{args.run}/checkpoints: no complete checkpoint")
    weights = ckpt / EMA_FILE if (ckpt / EMA_FILE).is_file() else ckpt / MODEL_FILE
    state = torch.load(ckpt / STATE_FILE, weights_only=True, map_location="cpu")
    cfg = yaml.safe_load((args.run / "config.yaml").read_text())
    previous = _previous_run(cfg.get("init_from") or "")  # before minutes of scoring
    model = load_model(weights).eval()
    scale = model.scale
    sets = ["Set5", "Set14", "B100"]
    torch.set_num_threads(args.threads)
    fused = model.fuse()
    scores = _scores(fused, args.data, sets, scale)
    bicubic = _scores(None, args.data, sets, scale)
    degradation = cfg["data"].get("degradation") or {"type": "bicubic"}
    real = degradation.get("type") == "real"
    extra: dict[str, object] = {"degradation": degradation}
    if args.intended_input:
        extra["intended_input"] = args.intended_input
    if args.cpu_hours is not None:
        extra["train_cpu_hours"] = args.cpu_hours
    if real and args.degrade:
        extra["degraded_psnr_ssim"] = {d: _scores(fused, args.data, sets, scale, d) for d in args.degrade}
        extra["degraded_bicubic_psnr_ssim"] = {d: _scores(None, args.data, sets, scale, d) for d in args.degrade}
        if args.baseline:
            base = load_named(args.baseline).fuse()
            extra["baseline"] = args.baseline
            extra["baseline_psnr_ssim"] = _scores(base, args.data, sets, scale)
            extra["degraded_baseline_psnr_ssim"] = {d: _scores(base, args.data, sets, scale, d)
                                                    for d in args.degrade}
    if previous:
        extra["previous"] = previous
    teacher = state.get("teacher")
    if teacher:  # the trainer's record of the distillation teacher (file SHA-256 included)
        # A teacher named by a bundled or published name resolves to an absolute path of this machine (the checkout,
        # the cache); the file ships with a repo-relative path, or the name the config gave (the SHA-256 identifies it).
        shipped = Path(teacher["file"])
        if shipped.is_absolute():
            named = Path(teacher["teacher"])
            shipped = (shipped.relative_to(ROOT) if shipped.is_relative_to(ROOT) else
                       named if not named.is_absolute() else Path(shipped.name))
        extra["teacher"] = {**teacher, "file": shipped.as_posix(), "weight": cfg["distill"]["weight"]}
    starts = {"warm start": weights_file(cfg["init_from"])[0]} if cfg.get("init_from") else {}
    if teacher:
        starts["teacher"] = Path(teacher["file"])
    # Earlier stages' origins come with their record; a bundled warm start also lists them itself: once each.
    origins = _origins(starts) + list((previous or {}).get("derived_from", []))  # type: ignore[call-overload]
    if origins:
        extra["derived_from"] = list({json.dumps(o, sort_keys=True): o for o in origins}.values())
        extra["notice"] = "lightsr/weights/NOTICE"
    images = [r.get("images") for r in _log(args.run) if r.get("event") == "start"]
    if images and images[-1]:
        extra["train_images"] = int(images[-1])
    record = {
        "arch": model.arch, "scale": scale, "run": cfg["name"], "checkpoint": ckpt.name,
        "weights": "EMA" if weights.name == EMA_FILE else "model", "iterations": int(state["iteration"]),
        "train_hours": round(float(state["elapsed"]) / 3600, 3), "hardware": args.hardware,
        "train_data": ", ".join(Path(d).name for d in cfg["data"]["hr_dirs"]), "patch_size": cfg["data"]["patch_size"],
        "batch_size": cfg["train"]["batch_size"], "init_from": cfg.get("init_from") or "",
        "psnr_ssim": scores, "bicubic_psnr_ssim": bicubic,
        "torch": torch.__version__, "python": platform.python_version(), **extra,
    }
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items() if k not in ("arch", "scale")}
    target = args.out / f"{args.name or model.arch}_x{scale}.safetensors"
    against = _against(record, target) if target.is_file() and not args.allow_worse else []
    worse = [f"{where} {'not scored' if math.isnan(a) else f'{a:.4f}'} against {b:.4f}"
             for where, a, b in against if not a > b]
    if worse:
        raise SystemExit(f"{target}: not replaced, {ckpt} is not better on {'; '.join(worse)} "
                         "(--allow-worse replaces it anyway)")
    out = save_model(model, target, extra=meta)
    for where, a, b in against:
        print(f"replaced: {where} {b:.4f} -> {a:.4f} ({a - b:+.4f} dB)")
    scores_path = args.scores or ROOT / "training" / cfg["name"] / "scores.json"
    scores_path.parent.mkdir(parents=True, exist_ok=True)
    scores_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {scores_path}")
    for s in sets:
        print(f"{s} ×{scale}: {scores[s][0]:.2f} / {scores[s][1]:.4f}  (bicubic {bicubic[s][0]:.2f} / "
              f"{bicubic[s][1]:.4f}, {scores[s][0] - bicubic[s][0]:+.2f} dB)")
    for d, per_set in extra.get("degraded_psnr_ssim", {}).items():  # type: ignore[union-attr]
        for s in sets:
            bic = extra["degraded_bicubic_psnr_ssim"][d][s][0]  # type: ignore[index]
            base = extra.get("degraded_baseline_psnr_ssim", {}).get(d, {}).get(s, [float("nan")])[0]  # type: ignore[union-attr]
            print(f"{s} ×{scale} {d}: {per_set[s][0]:.2f} (bicubic {bic:.2f}: {per_set[s][0] - bic:+.2f} dB; "
                  f"{args.baseline or 'baseline'} {base:.2f}: {per_set[s][0] - base:+.2f} dB)")


if __name__ == "__main__":
    main()
