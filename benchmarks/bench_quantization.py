"""Quantised matmuls against the unquantised one at GLM-130B's shapes for one tensor-parallel
shard (TP=8), for a decode step (1 token) and a few tokens. Runs on CPU (pure path) or GPU
(pure and, with Triton, fused); the baseline is measured in the same run, ratios are
time / baseline (below 1 is faster). Prints a markdown table of medians after warm-up.

    python benchmarks/bench_quantization.py [--device cuda] [--dtype fp16] [--tokens 1,16]
"""
from __future__ import annotations

import argparse
import platform

import torch
import torch.nn.functional as F

from common import timed
from glm130b.quantization import (cpu_int8_available, cpu_int8_matmul, fused_available,
                                  fused_matmul, pure_matmul, quantize_weight)
from glm130b.tools.memory import DTYPES

# One TP=8 rank of a GLM-130B layer: [in, out] of each of the four quantised matrices.
SHAPES = {"query_key_value": (12288, 4608), "dense": (1536, 12288),
          "dense_h_to_4h": (12288, 8192), "dense_4h_to_h": (4096, 12288)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--tokens", default="1,16", help="rows of the input: 1 is a decode step")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    g = torch.Generator().manual_seed(0)
    weights = {name: (0.02 * torch.randn(out, inp, generator=g)).to(device, dtype)
               for name, (inp, out) in SHAPES.items()}
    quantized = {(name, bits): quantize_weight(w, bits) for name, w in weights.items()
                 for bits in (8, 4)}

    probe = torch.zeros(1, 8, device=device, dtype=dtype)
    methods = {"INT8 pure": (8, pure_matmul), "INT4 pure": (4, pure_matmul)}
    if fused_available(probe):
        methods.update({"INT8 fused": (8, fused_matmul), "INT4 fused": (4, fused_matmul)})
    if cpu_int8_available(probe, 8):
        methods["INT8 torch CPU kernel"] = (8, lambda x, q, s, bits: cpu_int8_matmul(x, q, s))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device {device} ({name or platform.machine()}), {args.dtype}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; TP=8 shard of GLM-130B")
    print("| matmul [in -> out] | tokens | " + args.dtype + " | "
          + " | ".join(f"{m} / {args.dtype}" for m in methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for m in (int(t) for t in args.tokens.split(",")):
        xs = {n: torch.randn(m, inp, generator=g).to(device, dtype)
              for n, (inp, _) in SHAPES.items()}
        totals = dict.fromkeys(["base", *methods], 0.0)
        for n, (inp, out) in SHAPES.items():
            x = xs[n]
            base = timed(lambda: F.linear(x, weights[n]), device, args.repeats)
            ratios = []
            for method, (bits, fn) in methods.items():
                q, s = quantized[(n, bits)]
                t = timed(lambda: fn(x, q, s, bits), device, args.repeats)
                totals[method] += t
                ratios.append(f"{t / base:.2f}")
            totals["base"] += base
            print(f"| {n} [{inp} -> {out}] | {m} | {base * 1e3:.2f} ms | {' | '.join(ratios)} |")
        # The four in a row: what one rank's linears cost per layer and decode step.
        ratios = " | ".join(f"{totals[k] / totals['base']:.2f}" for k in methods)
        print(f"| **layer step (all four)** | {m} | {totals['base'] * 1e3:.2f} ms | {ratios} |")


if __name__ == "__main__":
    with torch.no_grad():
        main()
