"""Export a training checkpoint to the reference layout (any TP) and safetensors.

    python -m glm130b.checkpoint.export --input-folder checkpoints/run \\
        --output-folder glm-tiny-sat --target-tp 1 --safetensors

A training checkpoint is DeepSpeed's: without a pipeline one `mp_rank_XX_model_states.pt` per
tensor-parallel rank, whose `module` is the model's state dict; with one, a file per pipeline
layer and rank (`layer_LL-model_TT-model_states.pt`) under the pipeline's names, mapped back
to the reference's keys. Each tensor is merged from its rank shards and cut for the target by
convert_tp's rules. The output is what `generate`/`evaluate --load` and `convert_tp` take:
`OUT/<iteration>/mp_rank_XX_model_states.pt`, the iteration folder written under a temporary
name and renamed into place, `latest` last. `--safetensors` adds `OUT/model.safetensors` (the
whole model, built in memory) and `OUT/config.json` (its GLMConfig). Optimizer states are not
read: in mixed precision the export holds the model's fp16/bf16 weights.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..cli import run
from ..config import GLMConfig
from ..files import atomic_write_text
from ..parallel import merge, shard
from .convert_tp import check_sources, split_rule
from .deepspeed_layout import META, reference_name
from .deepspeed_layout import load_file as load_deepspeed_file
from ..errors import CheckpointError
from .sat import (atomic_torch_save, own_storage, read_latest, replace_folder,
                  shard_name, write_latest)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def training_checkpoint(folder: Path, iteration: Optional[str]) -> tuple[Path, dict]:
    """The iteration folder to export (the latest, or `global_step<iteration>`) and the
    trainer's state saved with it."""
    tag = read_latest(folder) if iteration is None else (
        iteration if iteration.startswith("global_step") else f"global_step{iteration}")
    step = folder / tag
    if not step.is_dir():
        raise CheckpointError(f"{step}: no such iteration folder")
    if not (step / META).is_file():
        raise CheckpointError(f"{step}: not a training checkpoint of glm130b.pretrain (no {META}); "
                              "reshard a reference-layout checkpoint with "
                              "python -m glm130b.checkpoint.convert_tp")
    return step, json.loads((step / META).read_text())


def load_file(path: Path):
    """Memory-mapped: nothing is read until used."""
    return load_deepspeed_file(path, "cpu", mmap=True)


def plain_shards(step: Path, tp: int) -> list[dict]:
    shards = []
    for t in range(tp):
        state = load_file(step / shard_name(t)).get("module")
        if not isinstance(state, dict):
            raise CheckpointError(f"{step / shard_name(t)}: holds no model weights")
        shards.append(state)
    return shards


def pipeline_shards(step: Path, tp: int, num_layers: int) -> list[dict]:
    """Each tensor-parallel rank's tensors under the reference's keys, from its layer files:
    the embedding (00), the transformer layers, the final LayerNorm. The last file, the output
    head, holds the embedding's tied copy and is not read."""
    shards = []
    for t in range(tp):
        state = {}
        for layer in range(num_layers + 2):
            prefix = "tied_modules.embed." if layer == 0 else f"{layer}."
            path = step / f"layer_{layer:02d}-model_{t:02d}-model_states.pt"
            for name, tensor in load_file(path).items():
                state[reference_name(prefix + name, num_layers)] = tensor
        shards.append(state)
    return shards


def check_target(config: GLMConfig, target_tp: int) -> None:
    for what, size in (("attention heads", config.num_attention_heads),
                       ("vocabulary", config.vocab_size),
                       ("inner hidden size", config.inner_hidden_size)):
        if target_tp < 1 or size % target_tp:
            raise CheckpointError(f"--target-tp {target_tp} does not divide the {what} ({size})")


def sources_of(t: int, source_tp: int, target_tp: int) -> tuple[range, int, int]:
    """Which source shards hold target rank t's piece, and (rank, world) to cut it from their
    merge: a target needs only its own sources when one degree divides the other."""
    if target_tp % source_tp == 0:
        ratio = target_tp // source_tp
        return range(t // ratio, t // ratio + 1), t % ratio, ratio
    if source_tp % target_tp == 0:
        ratio = source_tp // target_tp
        return range(t * ratio, (t + 1) * ratio), 0, 1
    return range(source_tp), t, target_tp


def piece(shards: list[dict], key: str, rank: int, world: int,
          dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Piece `rank` of `world` of the tensor merged from `shards`, in its own storage."""
    rule = split_rule(key)
    tensor = shards[0][key]
    if rule is not None:
        whole = merge([s[key] for s in shards], *rule) if len(shards) > 1 else tensor
        tensor = shard(whole, *rule, rank=rank, world=world)
    return own_storage(tensor if dtype is None else tensor.to(dtype))


def write_reference(shards: list[dict], out: Path, iteration: str, target_tp: int,
                    dtype: Optional[torch.dtype]) -> Path:
    """`out/<iteration>/mp_rank_XX_model_states.pt` for every target rank, one at a time."""
    keys = list(shards[0])
    final, staging = out / iteration, out / f".{iteration}.exporting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (out / "latest").unlink(missing_ok=True)
    with tqdm(total=target_tp * len(keys), desc=f"TP {len(shards)} -> {target_tp}",
              unit="tensor", file=sys.stderr) as bar:
        for t in range(target_tp):
            group, rank, world = sources_of(t, len(shards), target_tp)
            state = {}
            for key in keys:
                state[key] = piece([shards[s] for s in group], key, rank, world, dtype)
                bar.update()
            atomic_torch_save({"module": state}, staging / shard_name(t))
            del state
    replace_folder(staging, final)
    write_latest(out, iteration)
    return final


def write_safetensors(shards: list[dict], config: dict, out: Path,
                      dtype: Optional[torch.dtype]) -> Path:
    """`out/model.safetensors`, the whole model (held in memory while written), and
    `out/config.json`."""
    state = {key: piece(shards, key, 0, 1, dtype)
             for key in tqdm(shards[0], desc="safetensors", unit="tensor", file=sys.stderr)}
    path = out / "model.safetensors"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors makes its files readable by the owner only
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    return path


def export(input_folder, output_folder, target_tp: int = 1, iteration: Optional[str] = None,
           safetensors: bool = False, dtype: Optional[torch.dtype] = None) -> Path:
    """Write the training checkpoint's weights in the reference layout at `target_tp` shards
    (and as safetensors); returns the iteration folder written."""
    input_folder, out = Path(input_folder), Path(output_folder)
    step, meta = training_checkpoint(input_folder, iteration)
    if out.resolve() == input_folder.resolve():
        raise CheckpointError(f"{out}: the output folder must differ from the input")
    config = GLMConfig(**meta["model"])
    check_target(config, target_tp)
    tp, pp = meta["layout"]["tensor"], meta["layout"]["pipeline"]
    shards = (pipeline_shards(step, tp, config.num_layers) if pp > 1 else plain_shards(step, tp))
    check_sources(shards, [f"{step} rank {t}" for t in range(tp)], 1, False)
    final = write_reference(shards, out, str(meta["iteration"]), target_tp, dtype)
    if safetensors:
        write_safetensors(shards, meta["model"], out, dtype)
    return final


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input-folder", required=True, help="the trainer's --save folder")
    p.add_argument("--output-folder", required=True)
    p.add_argument("--target-tp", type=int, default=1, help="tensor-parallel degree to write")
    p.add_argument("--iteration", help="N or global_stepN (default: the one 'latest' names)")
    p.add_argument("--safetensors", action="store_true",
                   help="also write OUTPUT/model.safetensors and OUTPUT/config.json")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: as the checkpoint holds it")
    args = p.parse_args(argv)
    final = export(args.input_folder, args.output_folder, args.target_tp, args.iteration,
                   args.safetensors, DTYPES.get(args.dtype))
    also = f" and {Path(args.output_folder) / 'model.safetensors'}" if args.safetensors else ""
    print(f"wrote {args.target_tp} shard(s) to {final}{also}; load with --load "
          f"{args.output_folder} --model-parallel-size {args.target_tp}")
    return 0


if __name__ == "__main__":
    run(main)
