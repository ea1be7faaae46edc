"""The reference's checkpoint layout (SwissArmyTransformer): a folder holding a text file
`latest` that names the iteration (a number, or `release`), and
`<iteration>/mp_rank_XX_model_states.pt`
per tensor-parallel rank, each a dict whose `module` entry is that rank's state dict.

Every read is `torch.load(weights_only=True)`; every write goes to a temporary name and is
renamed into place, `latest` last, so an interrupted save never looks complete.
"""
from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import atomic_open, atomic_write_text
from ..parallel import (get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
                        get_tensor_model_parallel_world_size)

PathLike = Union[str, os.PathLike]
_PARALLEL_ATTRS = ("tensor_model_parallel", "model_parallel", "partition_dim", "partition_stride")


def shard_name(tp_rank: int) -> str:
    return f"mp_rank_{tp_rank:02d}_model_states.pt"


def read_latest(folder: PathLike) -> str:
    folder = Path(folder)
    latest = folder / "latest"
    if not latest.is_file():
        hint = ""
        if not folder.is_dir():
            hint = "; the folder does not exist"
        elif (folder.parent / "latest").is_file():
            hint = f"; pass its parent {folder.parent}, the folder that holds 'latest'"
        raise CheckpointError(f"{latest}: no 'latest' file{hint}")
    iteration = latest.read_text().strip()
    if not iteration:
        raise CheckpointError(f"{latest} is empty")
    return iteration


def shard_paths(folder: PathLike, iteration: Optional[str] = None) -> list[Path]:
    """The shard files of an iteration, mp_rank_00 first; gaps are an error."""
    folder = Path(folder)
    iteration = read_latest(folder) if iteration is None else str(iteration)
    it_dir = folder / iteration
    if not it_dir.is_dir():
        raise CheckpointError(f"{it_dir}: iteration folder named by 'latest' is missing")
    found = sorted(it_dir.glob("mp_rank_*_model_states.pt"))
    expected = [it_dir / shard_name(i) for i in range(len(found))]
    if not found or found != expected:
        missing = [p.name for p in expected if p not in found] or [shard_name(0)]
        raise CheckpointError(f"{it_dir}: missing shard(s) {', '.join(missing)}")
    return found


def load_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The `module` state dict of one shard file, memory-mapped where possible."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused, not a weights-only checkpoint "
                              f"({str(e).splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict) or "module" not in obj:
        raise CheckpointError(f"{path}: no 'module' entry (not a reference-layout shard)")
    return obj["module"]


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Missing keys and wrong shapes are fatal; unexpected keys warn."""
    expected = model.state_dict()
    scales = [k for k in state if k.endswith("_scale") and k not in expected]
    if scales:
        raise CheckpointError(f"{where}: a quantised checkpoint ({scales[0]}); load it with "
                              "--from-quantized-checkpoint --quantization-bit-width 4|8")
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{where}: missing key(s) {', '.join(missing[:3])}{more}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{where}: {key} has shape {tuple(state[key].shape)} in the "
                                  f"checkpoint but {tuple(tensor.shape)} in the model")
    # The released files carry each layer's rotary table, which the model computes itself.
    unexpected = [k for k in state if k not in expected and not k.endswith("rotary_emb.inv_freq")]
    if unexpected:
        warnings.warn(f"{where}: ignoring unexpected key(s) {', '.join(unexpected[:5])}"
                      + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))


def load_into(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Load a checked state dict; a model built on the meta device takes the tensors as they
    are (no second copy in memory), keeping the parallel layers' split annotations."""
    check_state_dict(model, state, where)
    wanted = model.state_dict().keys()
    state = {k: v for k, v in state.items() if k in wanted}
    params = dict(model.named_parameters())
    on_meta = any(p.is_meta for p in params.values())
    attrs = {name: {a: getattr(p, a) for a in _PARALLEL_ATTRS if hasattr(p, a)}
             for name, p in params.items()}
    model.load_state_dict(state, strict=True, assign=on_meta)
    for name, p in model.named_parameters():
        for a, v in attrs[name].items():
            setattr(p, a, v)


def load_checkpoint(model: nn.Module, folder: PathLike, iteration: Optional[str] = None) -> str:
    """Load this rank's shard of a reference-layout checkpoint into `model`; returns the
    iteration name."""
    iteration = read_latest(folder) if iteration is None else str(iteration)
    shards = shard_paths(folder, iteration)
    world, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
    if len(shards) != world:
        raise CheckpointError(f"{Path(folder) / iteration}: {len(shards)} shard(s) but "
                              f"tensor-parallel size {world}; reshard with "
                              f"python -m glm130b.checkpoint.convert_tp")
    load_into(model, load_state_dict(shards[rank]), str(shards[rank]))
    return iteration


def atomic_torch_save(obj, path: PathLike) -> None:
    """torch.save under a temporary name. A write that fails (a full disk, an I/O error)
    raises its OSError: torch's zip writer reports it as a RuntimeError ("unexpected pos")
    that only carries the OSError as its context."""
    with atomic_open(path, "wb") as f:
        try:
            torch.save(obj, f)
        except RuntimeError as e:
            if isinstance(e.__context__, OSError):
                raise e.__context__ from None
            raise


def own_storage(t: torch.Tensor) -> torch.Tensor:
    """torch.save writes a tensor's whole storage: a view into a bigger tensor (a shard cut
    from a merged weight) is copied so the file holds only its own numbers."""
    t = t.detach()
    whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
    return t if whole and t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


def replace_folder(staging: Path, final: Path) -> None:
    """Move a finished folder into place; an old one of the same name goes only after."""
    if final.exists():
        old = final.with_name(f".{final.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)


def write_latest(folder: PathLike, iteration: Union[int, str]) -> None:
    atomic_write_text(Path(folder) / "latest", f"{iteration}\n")


def save_checkpoint(model_or_state: Union[nn.Module, dict], folder: PathLike,
                    iteration: Union[int, str] = "release", tp_rank: Optional[int] = None,
                    update_latest: bool = True) -> Path:
    """Write one rank's shard (the current rank by default); once every tensor-parallel rank
    has written, rank 0 points `latest` at it."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tp_rank = get_tensor_model_parallel_rank() if tp_rank is None else tp_rank
    it_dir = Path(folder) / str(iteration)
    it_dir.mkdir(parents=True, exist_ok=True)
    path = it_dir / shard_name(tp_rank)
    atomic_torch_save({"module": {k: own_storage(v) for k, v in state.items()}}, path)
    if get_tensor_model_parallel_world_size() > 1:
        torch.distributed.barrier(group=get_tensor_model_parallel_group())
    if update_latest and tp_rank == 0:
        write_latest(folder, iteration)
    return path
