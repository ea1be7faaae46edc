"""Training checkpoints on disk, as `glm130b.pretrain` writes them through DeepSpeed, read
without DeepSpeed's engine (export reads them; the trainer resumes from them):

    SAVE/latest                           the last complete checkpoint's tag, written last
    SAVE/global_stepN/...                 DeepSpeed's files (mp_rank_XX_model_states.pt, or
                                          layer_XX-model_YY-model_states.pt in a pipeline;
                                          optimizer shards)
    SAVE/global_stepN/rng_state_RRRR.pt   one per rank
    SAVE/global_stepN/glm130b_training.json  iteration, consumed samples, layout, model config

Pipeline parameters are saved under the pipeline's names (`3.attention.dense.weight` for
layer 2, `tied_modules.embed.word_embeddings.weight`); `reference_name` maps them back to the
reference's keys.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from .sat import read_latest

META = "glm130b_training.json"
TAG = re.compile(r"global_step(\d+)$")


def safe_globals() -> list:
    """The non-tensor classes DeepSpeed puts in its checkpoints: plain containers and enums."""
    # Imported here: reading the model's weights needs only these few of DeepSpeed's classes.
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    import collections
    return [DynamicLossScaler, LossScaler, ZeroStageEnum, fragment_address,
            collections.OrderedDict, torch.Size]


def load_file(path, map_location=None, mmap: bool = False):
    """One of DeepSpeed's checkpoint files, weights only (memory-mapped if asked)."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    with torch.serialization.safe_globals(safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001  (any unreadable file is the same error)
            raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None


def is_training_checkpoint(folder) -> bool:
    try:
        tag = read_latest(folder)
    except CheckpointError:
        return False
    return (Path(folder) / tag / META).is_file()


def read_meta(folder) -> dict:
    """The trainer's state in the checkpoint `latest` names."""
    folder = Path(folder)
    return json.loads((folder / read_latest(folder) / META).read_text())


def reference_name(name: str, num_layers: int) -> str:
    """A pipeline parameter or module name -> the reference's key for it."""
    if name.startswith("tied_modules.embed."):
        return "transformer." + name[len("tied_modules.embed."):]
    m = re.match(r"(\d+)(\.|$)(.*)", name)
    if not m:
        raise KeyError(f"not a GLM pipeline name: {name}")
    index, rest = int(m.group(1)), m.group(3)
    if 1 <= index <= num_layers:
        return f"transformer.layers.{index - 1}" + ("." + rest if rest else "")
    if index == num_layers + 1:
        return "transformer.final_layernorm" + ("." + rest if rest else "")
    raise KeyError(f"not a GLM pipeline name: {name}")
