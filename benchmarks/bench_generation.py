"""Decoding speed of the generation loop: tokens/s at batch 1 and batch 16, with the key/value
cache and recomputing the whole sequence for every token (the baseline, same run). Prompts of a
batch have different lengths, as in file mode; no end token, so every row runs to the end.
Runs on CPU or GPU; prints a markdown table with medians after warm-up.

    python benchmarks/bench_generation.py [--device cuda] [--dtype fp16] [--preset glm-tiny]
"""
from __future__ import annotations

import argparse

import torch

from common import add_device_args, build_model, timed
from glm130b.generation import BaseStrategy, batch_filling_sequence




def prompts(batch: int, length: int, vocab: int, gmask: int, sop: int) -> list[list[int]]:
    """[gMASK] prompts of lengths spread over length/2 .. length."""
    g = torch.Generator().manual_seed(batch)
    lengths = torch.linspace(length // 2, length, batch).long().tolist() if batch > 1 else [length]
    return [torch.randint(0, vocab, (n - 2,), generator=g).tolist() + [gmask, sop]
            for n in lengths]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(p)
    p.add_argument("--prompt-length", type=int, default=32)
    p.add_argument("--out-seq-length", type=int, default=128)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    model = build_model(args)
    config = model.config
    vocab = config.vocab_size - 8
    gmask, sop = vocab + 1, vocab + 4

    print(f"device {device}, {args.dtype}, {args.preset}, prompts up to {args.prompt_length} "
          f"tokens, out-seq-length {args.out_seq_length}, greedy")
    print("| batch | new tokens | recompute tokens/s | KV cache tokens/s | cache / recompute |")
    print("|---|---|---|---|---|")
    for batch in args.batches:
        contexts = prompts(batch, args.prompt_length, vocab, gmask, sop)
        new = sum(args.out_seq_length - len(c) for c in contexts)
        rate = {}
        for use_cache in (False, True):
            def decode():
                strategy = BaseStrategy(top_k=1, end_tokens=[])
                batch_filling_sequence(model, contexts, [None] * batch, strategy,
                                       args.out_seq_length, use_cache=use_cache)
            rate[use_cache] = new / timed(decode, device, args.repeats)
        print(f"| {batch} | {new} | {rate[False]:,.0f} | {rate[True]:,.0f} | "
              f"{rate[True] / rate[False]:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
