"""Saving and resuming training: DeepSpeed's checkpoint (model, optimizer, loss scaler), plus
the trainer's position and every rank's random streams, so a resumed run continues exactly.
The files and their layout are described in `glm130b.checkpoint.deepspeed_layout`.

Every file is written under a temporary name and renamed into place, and `latest` moves only
after every rank has finished, so a crash mid-save leaves the previous checkpoint as `latest`.
Loading uses `torch.load(weights_only=True)` with DeepSpeed's few plain classes allowed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from ..checkpoint.deepspeed_layout import META, TAG, load_file, read_meta
from ..checkpoint.sat import atomic_torch_save, read_latest, write_latest
from ..errors import CheckpointError
from ..files import atomic_write_text
from ..parallel import (get_pipeline_model_parallel_world_size, get_rng_tracker,
                        get_tensor_model_parallel_world_size)


class AtomicCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine with atomic writes and weights-only reads."""

    def save(self, state_dict, path: str):
        atomic_torch_save(state_dict, path)

    def load(self, path: str, map_location=None):
        return load_file(path, map_location)


def _rng_state() -> dict:
    # The data sampler needs no state: sample k is a function of (seed, k) alone.
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            "tracker": get_rng_tracker().get_states()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_rng_tracker().set_states(state["tracker"])


def save(engine, folder, iteration: int, trainer_state: dict, keep: Optional[int]) -> Path:
    """Write the checkpoint of `iteration` on every rank; rank 0 then moves `latest` to it and
    removes all but the newest `keep` checkpoints."""
    folder, tag = Path(folder), f"global_step{iteration}"
    engine.checkpoint_engine = AtomicCheckpointEngine()
    engine.save_checkpoint(str(folder), tag=tag, client_state={"trainer": trainer_state},
                           save_latest=False)
    rank = dist.get_rank()
    atomic_torch_save(_rng_state(), folder / tag / f"rng_state_{rank:04d}.pt")
    dist.barrier()
    if rank == 0:
        atomic_write_text(folder / tag / META, json.dumps(trainer_state, indent=1) + "\n")
        write_latest(folder, tag)
        _prune(folder, tag, keep)
    dist.barrier()
    return folder / tag


def _prune(folder: Path, current: str, keep: Optional[int]) -> None:
    """Old checkpoints beyond `keep`, and any newer than `latest` (left by a crashed save)."""
    newest = int(TAG.match(current).group(1))
    steps = sorted(int(TAG.match(p.name).group(1)) for p in folder.iterdir() if TAG.match(p.name))
    complete = [s for s in steps if s <= newest]
    doomed = [s for s in steps if s > newest]
    if keep:
        doomed += complete[:-keep]
    for s in doomed:
        shutil.rmtree(folder / f"global_step{s}", ignore_errors=True)


def load(engine, folder) -> dict:
    """Restore model, optimizer, loss scaler and this rank's random streams; return the
    trainer's state (iteration, consumed samples, ...)."""
    folder = Path(folder)
    tag = read_latest(folder)
    meta = read_meta(folder)
    layout = meta["layout"]
    tp, pp = get_tensor_model_parallel_world_size(), get_pipeline_model_parallel_world_size()
    if (layout["tensor"], layout["pipeline"]) != (tp, pp):
        raise CheckpointError(
            f"{folder / tag}: saved at tensor x pipeline parallel {layout['tensor']} x "
            f"{layout['pipeline']}, this run is {tp} x {pp}; export it "
            "with python -m glm130b.checkpoint.export and start from that with --load")
    engine.checkpoint_engine = AtomicCheckpointEngine()
    path, client = engine.load_checkpoint(str(folder), tag=tag, load_lr_scheduler_states=False)
    if path is None:
        raise CheckpointError(f"{folder / tag}: DeepSpeed could not load this checkpoint")
    rng = folder / tag / f"rng_state_{dist.get_rank():04d}.pt"
    if rng.is_file() and layout["world"] == dist.get_world_size():
        _set_rng_state(torch.load(rng, weights_only=True))
    return client["trainer"]

