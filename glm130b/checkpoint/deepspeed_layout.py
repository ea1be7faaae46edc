"""Training checkpoints on disk, as `glm130b.pretrain` writes them through DeepSpeed, read
without DeepSpeed's engine (export reads them; the trainer resumes from them):

    SAVE/latest                           the last complete checkpoint's tag, written last
    SAVE/global_stepN/...                 DeepSpeed's files (mp_rank_XX_model_states.pt, or
                                          layer_XX-model_YY-model_states.pt in a pipeline;
                                          optimizer shards)
    SAVE/global_stepN/rng_state_RRRR.pt   one per rank
    SAVE/global_stepN/glm130b_training.json  iteration, consumed samples, layout, model config,
                                          written once every rank has written its files

A checkpoint in the reference layout (`glm130b.checkpoint.sat`) is told apart by its own
files, never by the metadata alone: its iteration folder is a number or `release` and holds
only `mp_rank_XX_model_states.pt` files with a `module` entry, where DeepSpeed's tag is
`global_stepN` and its files carry DeepSpeed's keys, or are per pipeline layer.

Pipeline parameters are saved under the pipeline's names (`3.attention.dense.weight` for
layer 2, `tied_modules.embed.word_embeddings.weight`); `reference_name` maps them back to the
reference's keys.
"""
from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError
from .sat import read_latest

META = "glm130b_training.json"
TAG = re.compile(r"global_step(\d+)$")
LAYER_FILE = re.compile(r"layer_\d+-model_\d+-model_states\.pt$")
# Keys only DeepSpeed's model-states files have; a reference-layout shard holds `module` alone.
DEEPSPEED_KEYS = {"ds_version", "ds_config", "global_steps", "dp_world_size", "mp_world_size",
                  "buffer_names", "optimizer"}
META_KEYS = ("iteration", "consumed_samples", "layout")
LAYOUT_KEYS = ("tensor", "pipeline", "world")


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
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    with torch.serialization.safe_globals(safe_globals()):
        try:
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001  (any unreadable file is the same error)
            raise CheckpointError(f"{path}: {what_is_wrong(path, e)}") from None


def what_is_wrong(path: Path, error: Exception) -> str:
    """A damaged file's fault in a few words (torch's own messages run to a paragraph)."""
    if path.stat().st_size == 0:
        return "empty (0 bytes), the checkpoint is damaged"
    text = str(error).strip()
    first = text.split(". ")[0].splitlines()[0] if text else type(error).__name__
    if isinstance(error, pickle.UnpicklingError):
        return f"refused, holds more than weights ({first})"
    # Where a cut-off zip archive fails depends on where it was cut: the reader's own words
    # vary (no central directory, an invalid seek, ...), the fault does not.
    return f"truncated or corrupt, not a whole torch file ({first})"


def tag_folder(folder) -> Path:
    """The checkpoint folder `latest` names."""
    folder = Path(folder)
    step = folder / read_latest(folder)
    if not step.is_dir():
        raise CheckpointError(f"{step}: the folder 'latest' names is missing")
    return step


def is_training_checkpoint(folder) -> bool:
    """True for a checkpoint of this trainer, False for one in the reference layout. A training
    checkpoint whose metadata is gone is an error: it cannot be resumed, and taking its weights
    for a fresh start would begin again at iteration 0 over the run's own checkpoints."""
    step = tag_folder(folder)
    names = {p.name for p in step.iterdir()}
    training = (TAG.match(step.name) is not None or any(LAYER_FILE.match(n) for n in names)
                or _has_deepspeed_keys(step / "mp_rank_00_model_states.pt"))
    if training and META not in names:
        raise CheckpointError(f"{step / META}: missing; {step.name} holds DeepSpeed's training "
                              "files, which cannot be resumed without it (nor taken for "
                              "reference-layout weights); restore the file")
    return training


def _has_deepspeed_keys(path: Path) -> bool:
    try:  # memory-mapped: only the pickled index is read
        state = load_file(path, "cpu", mmap=True)
    except CheckpointError:  # the reference loader reports it in its own words
        return False
    return isinstance(state, dict) and bool(DEEPSPEED_KEYS & state.keys())


def read_meta(folder) -> dict:
    """The trainer's state in the checkpoint `latest` names, checked."""
    path = tag_folder(folder) / META
    return meta_of(path)


def meta_of(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise CheckpointError(f"{path}: empty ({len(text)} bytes), the checkpoint is damaged")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: damaged, not JSON ({e.msg}: line {e.lineno} "
                              f"column {e.colno})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged, not a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if not missing:
        layout = meta["layout"] if isinstance(meta["layout"], dict) else {}
        missing = [f"layout.{k}" for k in LAYOUT_KEYS if k not in layout]
    if missing:
        raise CheckpointError(f"{path}: damaged, no {', '.join(missing)}")
    return meta


def damaged_files(paths) -> Optional[str]:
    """The first of `paths` (torch files) that does not load, in one line, or None. Each is
    memory-mapped, so only its index is read: a truncated file is found, not every flipped
    bit."""
    for path in paths:
        try:
            load_file(path, "cpu", mmap=True)
        except CheckpointError as e:
            return str(e)
    return None


def step_folders(folder) -> dict[int, Path]:
    """iteration -> its `global_stepN` folder, for every one in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    return {int(m.group(1)): p for p in folder.iterdir()
            if (m := TAG.match(p.name)) and p.is_dir()}


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
