"""Multiple-choice evaluation throughput: examples/s with all choices packed behind one shared
context (reference §2.3, what the evaluation runs) against the baseline of one sequence per
choice (the context repeated for every choice), same model, same examples, same run. Also the
single-token case, where packing scores every choice from one [sop]. Medians after warm-up;
runs on CPU or GPU.

    python benchmarks/bench_evaluation.py [--device cuda] [--dtype fp16] [--preset glm-tiny]
"""
from __future__ import annotations

import argparse

import torch

from common import add_device_args, build_model, timed
from glm130b import AttentionMask
from glm130b.evaluation.datasets import build_multiple_choice_sample
from glm130b.evaluation.inference import choice_log_probs
from glm130b.parallel import vocab_parallel_cross_entropy




def examples(n: int, context: int, choices: int, choice_tokens: tuple, vocab: int):
    """(context, choices) pairs of random text ids; choice lengths uniform in choice_tokens."""
    g = torch.Generator().manual_seed(0)

    def draw(k: int) -> list[int]:
        return torch.randint(0, vocab, (k,), generator=g).tolist()

    low, high = choice_tokens
    return [(draw(context), [draw(int(torch.randint(low, high + 1, (1,), generator=g)))
                             for _ in range(choices)]) for _ in range(n)]


@torch.no_grad()
def separate(model, batch, mask_id: int, sop_id: int) -> list[list[float]]:
    """The baseline: every choice its own row, context + [MASK] + [sop] + choice[:-1]."""
    rows = [(text, c) for text, choices in batch for c in choices]
    width = max(len(t) + 1 + len(c) for t, c in rows)
    device = next(model.parameters()).device
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (text, c) in enumerate(rows):
        d = len(text) + 1
        tokens[r, :d + len(c)] = torch.tensor(text + [mask_id, sop_id] + c[:-1])
        positions[r, :d] = torch.arange(d)
        positions[r, d:d + len(c)] = len(text)
        targets[r, d:d + len(c)] = torch.tensor(c)
    mask = AttentionMask.from_context_lengths([len(t) + 1 for t, _ in rows], width)
    logits = model(tokens.to(device), positions.to(device), AttentionMask(mask.context.to(device)),
                   parallel_output=True)
    scored = targets.to(device) != -100  # only the choices' rows, as the packed path does
    log_probs = -vocab_parallel_cross_entropy(logits[scored], targets.to(device)[scored])
    scores = torch.zeros(len(rows), device=device).index_add_(
        0, scored.nonzero()[:, 0], log_probs).tolist()
    per_example = len(batch[0][1])
    return [scores[i:i + per_example] for i in range(0, len(scores), per_example)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_args(p)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--context", type=int, default=96, help="context tokens per example")
    p.add_argument("--choices", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = torch.device(args.device)
    model = build_model(args)
    config = model.config
    vocab = config.vocab_size - 8
    mask_id, sop_id = vocab, vocab + 4

    print(f"device {device}, {args.dtype}, {args.preset}, {args.examples} examples of "
          f"{args.context} context tokens and {args.choices} choices, micro-batch "
          f"{args.micro_batch_size}")
    print("| choices | packed examples/s | one sequence per choice examples/s | "
          "packed / separate |")
    print("|---|---|---|---|")
    for label, lengths in (("2-8 tokens each", (2, 8)), ("1 token each", (1, 1))):
        data = examples(args.examples, args.context, args.choices, lengths, vocab)
        single = lengths == (1, 1)
        mbs = args.micro_batch_size
        batches = [data[i:i + mbs] for i in range(0, len(data), mbs)]

        def packed():
            for batch in batches:
                choice_log_probs(model, [build_multiple_choice_sample(t, c, single, mask_id, sop_id)
                                         for t, c in batch])

        def one_per_choice():
            for batch in batches:
                separate(model, batch, mask_id, sop_id)

        first = batches[0]
        a = choice_log_probs(model, [build_multiple_choice_sample(t, c, single, mask_id, sop_id)
                                     for t, c in first])
        b = separate(model, first, mask_id, sop_id)
        gap = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
        rate = {name: len(data) / timed(fn, device, args.repeats)
                for name, fn in (("packed", packed), ("separate", one_per_choice))}
        print(f"| {label} | {rate['packed']:,.1f} | {rate['separate']:,.1f} | "
              f"{rate['packed'] / rate['separate']:.2f}x |  (scores agree to {gap:.1e})",
              flush=True)


if __name__ == "__main__":
    main()
