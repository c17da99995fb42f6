"""Peak memory of one forward pass above the process baseline, in a fresh process per form.

The baseline is the resident set size once the network (and its inference form) is built and the input exists;
the peak is the process's maximum RSS after one forward pass. Each form is measured in its own child process,
so that one form's peak cannot hide another's (``ru_maxrss`` only ever grows).

    python benchmarks/peak_memory.py --model elan_light --scale 4 --size 320x180 [--forms train fused]
    python benchmarks/peak_memory.py --model lksmn --size 960x540 --forms streamed --tile 64 128 256

``streamed``: the inference form's layer-streamed tiled execution (networks with global operators) with cores of
``--tile`` pixels, output rows discarded as they come: full-size feature maps plus one tile (the fit of
``TilingSpec.map_bytes_per_pixel`` and ``stream_bytes_per_pixel``, see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _child(model: str, scale: int, w: int, h: int, form: str, threads: int) -> dict:
    import torch
    from latency import bench_model  # this folder is on sys.path when the script runs

    torch.set_num_threads(threads)
    net, x = bench_model(model, scale, h, w)
    tile = 0
    if form.startswith("streamed"):
        form, tile = "streamed", int(form.split(":")[1])
    fn = net.fuse() if form in ("fused", "streamed") else net
    baseline = _rss_mb()
    with torch.inference_mode():
        if form == "streamed":
            fn.forward_tiled(x, tile, lambda _y0, _block: None)
        else:
            fn(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if tile:
        form = f"streamed, tile {tile}"
    return {"form": form, "baseline_mb": baseline, "peak_mb": peak, "above_baseline_mb": peak - baseline}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="elan_light")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--size", default="320x180", help="input WxH")
    p.add_argument("--forms", nargs="+", default=["train", "fused"], choices=["train", "fused", "streamed"])
    p.add_argument("--tile", type=int, nargs="+", default=[128], help="cores of the streamed form")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.child:
        print(json.dumps(_child(args.model, args.scale, w, h, args.child, args.threads)))
        return 0
    print(f"# {args.model} ×{args.scale}, {w}×{h} input, {args.threads} threads, one process per form")
    print("| form | baseline RSS (MB) | peak RSS (MB) | peak above baseline (MB) |")
    print("|---|---|---|---|")
    forms = [f for form in args.forms for f in ([f"streamed:{t}" for t in args.tile] if form == "streamed"
                                                 else [form])]
    for form in forms:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--scale", str(args.scale),
                              "--size", args.size, "--threads", str(args.threads), "--child", form],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {form} | {r['baseline_mb']:.0f} | {r['peak_mb']:.0f} | {r['above_baseline_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
