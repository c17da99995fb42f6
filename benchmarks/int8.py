"""What int8 gives and costs: OpenVINO int8 graphs (lightsr.runtimes.int8) against fp32 in quality and speed.

Quality: Y-PSNR on Set5, Set14 and B100 (the papers' protocol, lightsr.evaluate) of the fp32 fused torch form and
of the int8 graph, per weights file; the change in dB. Speed at ×scale on a ``--input`` image (default 320×180):
fp32 fused torch, OpenVINO f32 and OpenVINO int8, alternating rounds in one process, minima and medians, with
the load average before and after. Default weights: every bundled ×4 file and both shared checkpoints (official
HASN ×4 with its ``params`` entry, FriedRiceLab's ELAN-light ×4). The CPU's int8-related flags head the output.

    python benchmarks/int8.py                              # quality and speed, every file
    python benchmarks/int8.py --weights hasn_x4 --no-speed
    python benchmarks/int8.py --weights lksmn_x4 --sets Set5 --variant naive --scan /model/blocks.0/ /model/mlfa_conv/
    python benchmarks/int8.py --no-quality --profile        # speed, and where OpenVINO spends the time

``--variant naive`` quantizes with NNCF's defaults (nothing kept f32, its CNN scheme), ``--variant NAME=JSON``
any other :class:`lightsr.models.spec.Int8Spec` (``'x={"keep_f32": ["/model/head/"], "model_type": "cnn"}'``);
``--scan PATTERN ...`` adds, one at a time, each pattern to the variant's ``keep_f32`` and quantizes again (a
sensitivity scan); ``--revert PATTERN ...`` is the quick form of it: the variant's int8 graph with the activation
quantizers of the layers matching each pattern removed (their weights stay int8), no new calibration. Variants
other than the spec's skip the cache and its check.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
SHARED = Path(os.environ.get("LIGHTSR_SHARED", REPO_ROOT.parent / "shared"))
# (label, weights file or bundled name, container entry)
SHARED_CHECKPOINTS = [("HASN ×4 official", SHARED / "weights" / "HASN_x4_official.pth", "params"),
                      ("ELAN-light ×4 FriedRiceLab", SHARED / "weights" / "ELAN-light_x4_FriedRiceLab.pth", None)]
# Ops that only move values: a quantizer before one of them quantizes the layer after it.
LAYOUT_OPS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "VariadicSplit", "Split", "Concat", "Gather"}
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "avx512_bf16")


def cpu_summary() -> str:
    flags: set[str] = set()
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and name == "unknown CPU":
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    have = [f for f in INT8_FLAGS if f in flags]
    lacks = [f for f in INT8_FLAGS if f not in flags]
    return f"{name}, {os.cpu_count()} CPUs; flags: {' '.join(have) or '-'} (lacks: {' '.join(lacks) or '-'})"


class Graph:
    """An OpenVINO graph (ONNX or IR file, or an openvino.Model) as a lightsr runtime: tensor in, tensor out."""

    def __init__(self, graph, scale: int, threads: int, perf_count: bool = False) -> None:
        import openvino as ov
        import torch

        compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": threads,
                                                          "PERFORMANCE_HINT": "LATENCY",
                                                          "PERF_COUNT": perf_count})
        self.request, self.scale, self.device = compiled.create_infer_request(), scale, torch.device("cpu")

    def profile(self, top: int = 8) -> str:
        """Where the last inference spent its time: the ``top`` kinds of operation (OpenVINO's type and kernel)."""
        by: dict[str, float] = {}
        for p in self.request.profiling_info:
            key = f"{p.node_type} ({p.exec_type})"
            by[key] = by.get(key, 0.0) + p.real_time.total_seconds()
        total = sum(by.values()) or 1.0
        ranked = sorted(by.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in ranked)

    def __call__(self, x):
        import torch

        self.request.infer({0: x.detach().contiguous().numpy()})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy())


def revert(graph, pattern: str):
    """A copy of ``graph`` (an IR path or an openvino.Model) whose activation quantizers (FakeQuantize) feeding
    layers whose names match ``pattern`` are bypassed."""
    import re

    import openvino as ov

    model = ov.Core().read_model(graph) if isinstance(graph, str) else graph.clone()
    rx, n = re.compile(pattern), 0

    def reaches(node) -> bool:
        """Whether ``node``, or a layer it feeds through layout-only ops, matches."""
        if rx.match(node.get_friendly_name()):
            return True
        return node.get_type_name() in LAYOUT_OPS and any(
            reaches(t.get_node()) for out in node.outputs() for t in out.get_target_inputs())

    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        for target in list(op.output(0).get_target_inputs()):
            if reaches(target.get_node()):
                target.replace_source_output(op.input_value(0))
                n += 1
    print(f"# {pattern}: {n} quantized inputs reverted", file=sys.stderr)
    return model


def parse_variant(text: str, base):
    from lightsr.models.spec import Int8Spec

    if text == "spec":
        return "spec", base
    if text == "naive":
        return "naive", Int8Spec(keep_f32=(), model_type="cnn")
    label, _, body = text.partition("=")
    return label, dataclasses.replace(base, **json.loads(body))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", nargs="+", help="bundled names (lksmn_x4) or files (default: all, see above)")
    p.add_argument("--param-key", help="container entry of --weights files")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14", "B100"])
    p.add_argument("--data", default=str(SHARED / "data" / "benchmark"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calibration", help="a folder of calibration images (default: scikit-image's photos)")
    p.add_argument("--variant", action="append", default=[],
                   help="spec (default), naive, or NAME=JSON of Int8Spec fields (repeatable)")
    p.add_argument("--scan", nargs="+", default=[], help="keep_f32 patterns to add one at a time")
    p.add_argument("--revert", nargs="+", default=[],
                   help="patterns whose layers' activation quantizers are removed, one at a time")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--input", default="320x180", help="WxH of the timed input (default %(default)s)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--profile", action="store_true",
                   help="after the timed rounds, where OpenVINO's f32 and int8 graphs spend their time (per op kind)")
    args = p.parse_args()
    if args.profile and args.no_speed:
        p.error("--profile profiles the timed graphs: it needs the speed part (drop --no-speed)")

    import torch

    import lightsr
    from lightsr.bundled import bundled_names, bundled_weights
    from lightsr.evaluate import evaluate
    from lightsr.runtimes import build
    from lightsr.runtimes.int8 import calibration_set, check_psnr, int8_spec, quantize_graph

    torch.set_num_threads(args.threads)
    if args.weights:
        entries = [(w, w, args.param_key) for w in args.weights]
    else:
        entries = [(f"{n}_x4", f"{n}_x4", None) for n in bundled_names() if 4 in bundled_weights(n)]
        entries += [(label, str(path), key) for label, path, key in SHARED_CHECKPOINTS if path.is_file()]
    print(f"# {cpu_summary()}")
    print(f"# {args.threads} threads; load average {os.getloadavg()[0]:.1f} at start", flush=True)
    quality_rows, speed_rows = [], []
    t_start = time.perf_counter()
    for label, target, key in entries:
        model = lightsr.load_model(target, param_key=key)
        scale = model.scale
        calib = calibration_set(scale, args.calibration)
        spec = int8_spec(model)
        variants = [parse_variant(v, spec) for v in (args.variant or ["spec"])]
        for vlabel, vspec in list(variants):
            variants += [(f"{vlabel}+{pat}", dataclasses.replace(vspec, keep_f32=(*vspec.keep_f32, pat)))
                         for pat in args.scan]
        graphs = {}
        export = build(model, "openvino", "fp32", "cpu", threads=args.threads).path
        for vlabel, vspec in variants:
            t0 = time.perf_counter()
            if vspec == spec and args.calibration is None:
                graphs[vlabel] = str(build(model, "openvino", "int8", "cpu", threads=args.threads).path)
            else:
                graphs[vlabel] = quantize_graph(export, vspec, calib.inputs, validate=False)
            print(f"# {label} {vlabel}: int8 graph in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            for pat in args.revert:
                graphs[f"{vlabel}-{pat}"] = revert(graphs[vlabel], pat)
        if not args.no_quality:
            ref = build(model, "torch", "fp32", "cpu", threads=args.threads)
            base = {r.set: r.psnr for r in evaluate(ref, args.data, args.sets, scale, progress=False)}
            photos = check_psnr(ref, calib.pairs, scale)
            for vlabel, g in graphs.items():
                run = Graph(g, scale, args.threads)
                got = {r.set: r.psnr for r in evaluate(run, args.data, args.sets, scale, progress=False)}
                row = f"| {label} | {vlabel} | " + " | ".join(
                    f"{base[s]:.4f} → {got[s]:.4f} ({got[s] - base[s]:+.4f})" for s in args.sets) + (
                    f" | {check_psnr(run, calib.pairs, scale) - photos:+.4f} |")
                quality_rows.append(row)
                print(row, flush=True)
        if not args.no_speed:
            w, h = map(int, args.input.split("x"))
            g = torch.Generator().manual_seed(0)
            coarse = torch.rand(1, 3, max(h // 4, 2), max(w // 4, 2), generator=g)
            x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic").clamp(0, 1)
            fns = {"torch fp32 fused": build(model, "torch", "fp32", "cpu", threads=args.threads),
                   "OpenVINO f32": build(model, "openvino", "fp32", "cpu", threads=args.threads)}
            fns.update({f"OpenVINO int8 ({v})": Graph(gr, scale, args.threads) for v, gr in graphs.items()})
            times: dict[str, list[float]] = {k: [] for k in fns}
            load0 = os.getloadavg()[0]
            with torch.inference_mode():
                for fn in fns.values():
                    fn(x)
                for _ in range(args.rounds):
                    for k, fn in fns.items():
                        t0 = time.perf_counter()
                        fn(x)
                        times[k].append(time.perf_counter() - t0)
            load1 = os.getloadavg()[0]
            if args.profile:  # separate runs: counting slows the timed ones
                counted_graphs = {"OpenVINO f32": str(export), **{f"OpenVINO int8 ({v})": g for v, g in graphs.items()}}
                for k, gr in counted_graphs.items():
                    counted = Graph(gr, scale, args.threads, perf_count=True)
                    counted(x)
                    counted(x)
                    print(f"# {label} {k} profile: {counted.profile()}", flush=True)
            best = {k: min(v) for k, v in times.items()}
            torch_s, ov_s = best["torch fp32 fused"], best["OpenVINO f32"]
            for k in fns:
                row = (f"| {label} | {k} | {best[k]:.3f} s | {statistics.median(times[k]):.3f} s | "
                       f"{torch_s / best[k]:.2f}× | {ov_s / best[k]:.2f}× | {load0:.1f}–{load1:.1f} |")
                speed_rows.append(row)
                print(row, flush=True)
        print(f"# {label} done ({time.perf_counter() - t_start:.0f} s)", file=sys.stderr, flush=True)
    print(f"\n# {cpu_summary()}")
    if quality_rows:
        print("\n| weights | int8 | " + " | ".join(f"{s} fp32 → int8 (Δ dB)" for s in args.sets)
              + " | Δ dB on the check photos |")
        print("|---|---|" + "---|" * (len(args.sets) + 1))
        print("\n".join(quality_rows))
    if speed_rows:
        print(f"\n×{scale} {args.input}, {args.threads} threads, {args.rounds} alternating rounds")
        print("| weights | runtime | min | median | × fp32 fused torch | × OpenVINO f32 | load average |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(speed_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
