"""Forward time of the two attention paths, and cached decoding against recomputing the whole
sequence for every new token. Runs on CPU or GPU; prints a markdown table with medians.

    python benchmarks/bench_attention.py [--device cuda] [--dtype fp16]
"""
from __future__ import annotations

import argparse

import torch

from common import add_device_args, timed
from glm130b import GLM, AttentionMask, GLMConfig, KVCache
from glm130b.tools.memory import DTYPES




def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(p, preset=False)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    cfg = dict(num_layers=4, hidden_size=512, num_attention_heads=8, inner_hidden_size=1365,
               vocab_size=4096, max_sequence_length=args.seq + args.new_tokens)
    torch.manual_seed(0)
    tokens = torch.randint(0, 4096, (args.batch, args.seq + args.new_tokens), device=device)
    context = args.seq // 2
    mask = AttentionMask.from_context_lengths(context, tokens.shape[1], args.batch, device)

    print(f"device {device}, {args.dtype}, batch {args.batch}, sequence {args.seq}, "
          f"{cfg['num_layers']} layers x hidden {cfg['hidden_size']}")
    print("| measurement | reference | sdpa | sdpa / reference |")
    print("|---|---|---|---|")
    forward, decode, recompute = {}, {}, {}
    for impl in ("reference", "sdpa"):
        model = GLM(GLMConfig(**cfg, attention_impl=impl)).to(device, dtype).eval()
        seq = tokens[:, :args.seq]
        with torch.no_grad():
            forward[impl] = timed(lambda: model(seq, attention_mask=mask), device, args.repeats,
                                  warmup=2)

            def cached():
                cache = KVCache()
                model(seq, attention_mask=mask, kv_cache=cache)
                for t in range(args.seq, args.seq + args.new_tokens):
                    model(tokens[:, t:t + 1], attention_mask=mask, kv_cache=cache)

            def uncached():
                for t in range(args.seq, args.seq + args.new_tokens):
                    model(tokens[:, :t + 1], attention_mask=mask)
            decode[impl] = timed(cached, device, max(1, args.repeats // 2), warmup=2)
            recompute[impl] = timed(uncached, device, max(1, args.repeats // 2), warmup=2)
    ms = lambda s: f"{s * 1e3:.1f} ms"
    print(f"| forward, {args.seq} tokens | {ms(forward['reference'])} | {ms(forward['sdpa'])} | "
          f"{forward['sdpa'] / forward['reference']:.2f} |")
    print(f"| {args.new_tokens} new tokens with KV cache | {ms(decode['reference'])} | "
          f"{ms(decode['sdpa'])} | {decode['sdpa'] / decode['reference']:.2f} |")
    print(f"| {args.new_tokens} new tokens recomputing | {ms(recompute['reference'])} | "
          f"{ms(recompute['sdpa'])} | {recompute['sdpa'] / recompute['reference']:.2f} |")
    for impl in ("reference", "sdpa"):
        print(f"cache speed-up ({impl}): {recompute[impl] / decode[impl]:.1f}x")


if __name__ == "__main__":
    main()
