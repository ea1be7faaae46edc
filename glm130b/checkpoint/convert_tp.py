"""Reshard a reference-layout checkpoint to another tensor-parallel degree (reference §4.3).

    python -m glm130b.checkpoint.convert_tp --input-folder glm-130b-sat \\
        --output-folder glm-130b-sat-tp4 --target-tp 4

The rules are the reference's, decided by key name so any GLM checkpoint converts without
building a model: row-parallel weights (`attention.dense`, `mlp.dense_4h_to_h`) split along
dim 1, GeGLU's `dense_h_to_4h` per half ([x1-slice ; x2-slice] on each rank), LayerNorms, the
row-parallel biases and rotary tables copied, everything else split along dim 0. Target and
source degrees must divide one another. Source shards are memory-mapped and one target shard
is built at a time; the iteration folder is written under a temporary name and renamed into
place, then `latest` is written, so an interrupted run leaves no checkpoint that looks whole.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from ..cli import run
from ..parallel import merge, shard
from ..quantization import quantize_state_dict
from ..errors import CheckpointError
from .sat import (atomic_torch_save, load_state_dict, own_storage, read_latest,
                  replace_folder, shard_name, shard_paths, write_latest)

ROW_PARALLEL = ("attention.dense.weight", "mlp.dense_4h_to_h.weight")
GEGLU = ("mlp.dense_h_to_4h.weight", "mlp.dense_h_to_4h.bias")
REPLICATED = ("input_layernorm.weight", "input_layernorm.bias", "attention.dense.bias",
              "post_attention_layernorm.weight", "post_attention_layernorm.bias",
              "mlp.dense_4h_to_h.bias", "attention.rotary_emb.inv_freq",
              "final_layernorm.weight", "final_layernorm.bias")


def split_rule(key: str) -> Optional[tuple[int, int]]:
    """(dim, stride) of a key's tensor-parallel split, None for a replicated key."""
    if key.endswith(REPLICATED):
        return None
    if key.endswith(ROW_PARALLEL):
        return 1, 1
    return 0, 2 if key.endswith(GEGLU) else 1


def degree_of(state: dict) -> Optional[int]:
    """The tensor-parallel degree a shard was cut for, read off its shapes: the fused QKV holds
    3 x hidden / degree rows, and the LayerNorms hold the whole hidden size."""
    qkv = [k for k in state if k.endswith("attention.query_key_value.weight")]
    if not qkv:
        return None
    hidden = state[qkv[0].replace("attention.query_key_value.weight", "input_layernorm.weight")]
    return 3 * hidden.shape[0] // state[qkv[0]].shape[0]


def check_sources(sources: list[dict], names: list[str], ratio: int, splitting: bool) -> None:
    """Every shard holds the same keys with the same shapes, as many shards as they were cut
    for, and each split dimension divides into the target's pieces; anything else would write
    a checkpoint no model can load."""
    degree = degree_of(sources[0])
    if degree is not None and degree != len(sources):
        raise CheckpointError(f"{names[0]}: cut for tensor-parallel degree {degree} but "
                              f"{len(sources)} shard file(s) found; missing shard(s)")
    keys = list(sources[0])
    for state, name in zip(sources[1:], names[1:]):
        if set(state) != set(keys):
            odd = sorted(set(state) ^ set(keys))[0]
            raise CheckpointError(f"{name}: its keys differ from {names[0]}'s (e.g. {odd})")
    scaled = [k for k in keys if k.endswith("_scale")]
    if scaled:
        raise CheckpointError(f"{names[0]}: holds quantised weights ({scaled[0]}), whose row "
                              "scales are tied to their tensor-parallel degree; convert the "
                              "FP16 checkpoint instead, with --quantization-bit-width")
    for key in keys:
        shapes = {tuple(s[key].shape) for s in sources}
        if len(shapes) > 1:
            raise CheckpointError(f"{key}: shards disagree on its shape ({sorted(shapes)})")
        rule = split_rule(key)
        if rule and splitting:
            dim, stride = rule
            size = sources[0][key].shape[dim]
            if size % (ratio * stride):
                raise CheckpointError(f"{key}: dimension {dim} of size {size} does not split "
                                      f"into {ratio * stride} pieces")


def target_shard(sources: list[dict], piece: int, pieces: int) -> dict[str, torch.Tensor]:
    """One target shard: merged from several sources, or piece `piece` of `pieces` cut from
    one source."""
    out = {}
    for key, first in sources[0].items():
        rule = split_rule(key)
        if rule is None:
            out[key] = first
        elif len(sources) > 1:
            out[key] = merge([s[key] for s in sources], *rule)
        else:
            out[key] = shard(first, *rule, rank=piece, world=pieces)
    return out


def convert(input_folder, output_folder, target_tp: int, quantize=None) -> Path:
    """Write `output_folder` holding the input's latest iteration at `target_tp` shards.
    `quantize`, if given, maps each finished target shard's state dict to its quantised form."""
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    iteration = read_latest(input_folder)
    paths = shard_paths(input_folder, iteration)
    source_tp = len(paths)
    if target_tp < 1 or (source_tp % target_tp and target_tp % source_tp):
        raise CheckpointError(f"{input_folder}: cannot convert {source_tp} shard(s) to "
                              f"{target_tp}: one degree must divide the other")
    if output_folder.resolve() == input_folder.resolve():
        raise CheckpointError(f"{output_folder}: the output folder must differ from the input")
    splitting = target_tp >= source_tp
    ratio = target_tp // source_tp if splitting else source_tp // target_tp
    sources = [load_state_dict(p) for p in paths]  # memory-mapped: nothing is read yet
    check_sources(sources, [str(p) for p in paths], ratio, splitting)

    final = output_folder / iteration
    staging = output_folder / f".{iteration}.converting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (output_folder / "latest").unlink(missing_ok=True)
    for t in tqdm(range(target_tp), desc=f"TP {source_tp} -> {target_tp}", unit="shard",
                  file=sys.stderr):
        if splitting:
            state = target_shard([sources[t // ratio]], t % ratio, ratio)
        else:
            state = target_shard(sources[t * ratio:(t + 1) * ratio], 0, 1)
        if quantize is not None:
            state = quantize(state)
        atomic_torch_save({"module": {k: own_storage(v) for k, v in state.items()}},
                          staging / shard_name(t))
        del state
    replace_folder(staging, final)
    write_latest(output_folder, iteration)
    return final


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-folder", required=True, help="checkpoint folder holding 'latest'")
    p.add_argument("--output-folder", required=True)
    p.add_argument("--target-tp", type=int, default=4, help="tensor-parallel degree to write")
    p.add_argument("--quantization-bit-width", type=int, choices=(4, 8), default=None,
                   help="write the four big matrices per layer as INT4/INT8 with row scales "
                        "(load with --from-quantized-checkpoint)")
    args = p.parse_args(argv)
    bits = args.quantization_bit_width
    quantize = (lambda state: quantize_state_dict(state, bits)) if bits else None
    final = convert(args.input_folder, args.output_folder, args.target_tp, quantize)
    how = f" --from-quantized-checkpoint --quantization-bit-width {bits}" if bits else ""
    print(f"wrote {args.target_tp} shard(s) to {final}; load with --model-parallel-size "
          f"{args.target_tp}{how}")
    return 0


if __name__ == "__main__":
    run(main)
