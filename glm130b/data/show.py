"""Print one training sample decoded, so a person can check an objective by eye.

    python -m glm130b.data.show --data-path data/corpus --tokenizer-type sentencepiece \\
        --tokenizer-model tok.model --index 7 [--objective mask]

For each packed segment: Part A (the bidirectional context) as text with its positions, then
Part B piece by piece (each starts with [sop]) as `input -> target` with the positions and
loss-mask values of its tokens. The data arguments are pretraining's (`--seq-length`, ...).
"""
from __future__ import annotations

import argparse

import numpy as np

from glm130b.cli import config_from_args, run
from glm130b.data.infilling import InfillingConfig, Sample
from glm130b.data.mixture import DataConfig, add_data_args, build_mixture
from glm130b.errors import UsageError
from glm130b.tokenization import add_tokenizer_args, get_tokenizer

NAMES = {"gmask": "[gMASK]", "mask": "[MASK]", "smask": "[sMASK]", "mip": "instruction (MIP)"}


def runs(values: np.ndarray) -> str:
    """A compact description of positions or loss values: "17", "3..9" or the list."""
    values = values.tolist()
    if not values:
        return "-"
    if len(set(values)) == 1:
        return f"{values[0]}" + (f" x{len(values)}" if len(values) > 1 else "")
    if values == list(range(values[0], values[0] + len(values))):
        return f"{values[0]}..{values[-1]}"
    return " ".join(map(str, values))


def describe(sample: Sample, tokenizer) -> list[str]:
    text = tokenizer.detokenize
    lines = [f"{NAMES[sample.objective]}: {len(sample)} tokens in {len(sample.segments)} "
             f"segment(s), loss on {int(sample.loss_mask.sum())}"]
    start = 0
    for number, (length, context) in enumerate(sample.segments, 1):
        part = slice(start, start + length)
        tokens, targets = sample.tokens[part], sample.targets[part]
        pos, loss = sample.position_ids[part], sample.loss_mask[part]
        lines.append(f"-- segment {number}: tokens {start}..{start + length - 1}, "
                     f"Part A {context} tokens (bidirectional), Part B {length - context}")
        lines.append(f"Part A   positions {runs(pos[:context])}   loss {runs(loss[:context])}")
        lines.append("  " + text(tokens[:context]))
        lines.append("Part B   input -> target   (positions; loss)")
        sop = tokenizer.get_command("sop")
        cuts = [i for i in range(context, length) if tokens[i] == sop] + [length]
        for a, b in zip(cuts[:-1], cuts[1:]):
            lines.append(f"  {text(tokens[a:b])}  ->  {text(targets[a:b])}   "
                         f"({runs(pos[a:b])}; {runs(loss[a:b])})")
        start += length
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m glm130b.data.show",
                                description=__doc__.splitlines()[0])
    p.add_argument("--index", type=int, default=0, help="which sample of the mixture")
    p.add_argument("--objective", choices=sorted(NAMES), default=None,
                   help="build this objective instead of the one the mixture draws")
    p.add_argument("--seed", type=int, default=1234)
    add_data_args(p)
    add_tokenizer_args(p)
    args = p.parse_args(argv)
    try:
        tokenizer = get_tokenizer(args.tokenizer_type, args.tokenizer_model)
        data = config_from_args(DataConfig, args,
                                infilling=config_from_args(InfillingConfig, args))
        sampler = build_mixture(data, tokenizer, args.seed)
        sample = sampler.sample(args.index, args.objective)
    except (ValueError, IndexError) as e:
        raise UsageError(str(e)) from None
    print(f"sample {args.index} (seed {args.seed}) of {' '.join(args.data_path)}")
    print("\n".join(describe(sample, tokenizer)))
    return 0


if __name__ == "__main__":
    run(main)
