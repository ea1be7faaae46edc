"""Saving and resuming training: DeepSpeed's checkpoint (model, optimizer, loss scaler), plus
the trainer's position and every rank's random streams, so a resumed run continues exactly.
The files and their layout are described in `glm130b.checkpoint.deepspeed_layout`.

Every file is written under a temporary name and renamed into place, and `latest` moves only
after every rank has finished, so a crash mid-save leaves the previous checkpoint as `latest`.
A write that fails (a full disk, an I/O error, a permission) fails the save on every rank
together: the partial folder is removed, `latest` stays, and every rank raises the same
`CheckpointError`. Loading checks every file first, shared out among the ranks, so that a
damaged one stops all ranks with one line naming it; reads are `torch.load(weights_only=True)`
with DeepSpeed's few plain classes allowed.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from ..checkpoint.deepspeed_layout import (META, TAG, damaged_files, load_file, meta_of,
                                           tag_folder)
from ..checkpoint.sat import atomic_torch_save, write_latest
from ..errors import CheckpointError
from ..files import atomic_write_text
from ..parallel import (broadcast_object, get_pipeline_model_parallel_world_size,
                        get_rng_tracker, get_tensor_model_parallel_world_size)

OPTIMIZER_BYTES = 12  # per parameter: fp32 master copy and Adam's two moments


class AtomicCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine with atomic writes and weights-only reads. A write
    that fails is kept, not raised, and the writes after it are skipped: DeepSpeed's save holds
    barriers, and a rank that left it early would keep the others waiting there forever."""

    def __init__(self):
        super().__init__()
        self.failure: Optional[str] = None

    def makedirs(self, path, exist_ok=False):
        self.guard(os.makedirs, path, exist_ok=exist_ok)

    def save(self, state_dict, path: str):
        self.guard(atomic_torch_save, state_dict, path)

    def load(self, path: str, map_location=None):
        return load_file(path, map_location)

    def guard(self, write, *args, **kwargs) -> None:
        if self.failure is not None:
            return
        try:
            write(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (whatever stops a write fails the save)
            self.failure = str(e) if isinstance(e, OSError) else f"{type(e).__name__}: {e}"


def rng_file(step: Path, rank: int) -> Path:
    return step / f"rng_state_{rank:04d}.pt"


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
    rank = dist.get_rank()
    need = expected_size(engine, folder, iteration) if rank == 0 else 0
    writer = AtomicCheckpointEngine()
    engine.checkpoint_engine = writer
    if hasattr(type(engine), "_copy_recovery_script"):  # DeepSpeed's zero_to_fp32.py, copied
        engine._copy_recovery_script = functools.partial(
            writer.guard, type(engine)._copy_recovery_script, engine)
    engine.save_checkpoint(str(folder), tag=tag, client_state={"trainer": trainer_state},
                           save_latest=False)
    writer.save(_rng_state(), rng_file(folder / tag, rank))
    failures = [None] * dist.get_world_size()
    dist.all_gather_object(failures, writer.failure)  # also: every rank has stopped writing
    message = None
    if rank == 0:
        failed = [(r, f) for r, f in enumerate(failures) if f]
        if not failed:
            writer.guard(_commit, folder, tag, trainer_state, keep)
            failed = [(0, writer.failure)] if writer.failure else []
        if failed:
            message = _abandon(folder, tag, failed, need)
    message = broadcast_object(message)
    if message:
        raise CheckpointError(message)
    return folder / tag


def _commit(folder: Path, tag: str, trainer_state: dict, keep: Optional[int]) -> None:
    atomic_write_text(folder / tag / META, json.dumps(trainer_state, indent=1) + "\n")
    write_latest(folder, tag)
    _prune(folder, tag, keep)


def _abandon(folder: Path, tag: str, failed: list, need: int) -> str:
    """Remove a failed save's folder (never one `latest` names) and say what happened."""
    latest = _latest_tag(folder)
    if latest != tag:
        shutil.rmtree(folder / tag, ignore_errors=True)
    rank, what = failed[0]
    where = f" on rank {rank}" if dist.get_world_size() > 1 else ""
    removed = "could not remove it" if (folder / tag).exists() else "removed it"
    try:
        free = f", {_size(free_bytes(folder))} is free there"
    except OSError:
        free = ""
    return (f"saving {folder / tag} failed{where} ({what}); {removed}, 'latest' still names "
            f"{latest or 'nothing'}; a checkpoint needs about {_size(need)}{free}")


def _latest_tag(folder: Path) -> Optional[str]:
    try:
        return (folder / "latest").read_text().strip() or None
    except OSError:
        return None


def expected_size(engine, folder: Path, iteration: int) -> int:
    """The bytes the next checkpoint should take: the last one's, else the parameters' with
    their optimizer state. Warns in one line when the disk has less free. Never raises: it
    runs on rank 0 alone, and the others would wait for it in DeepSpeed's save."""
    try:
        latest = _latest_tag(folder)
        step = folder / latest if latest else None
        need = sum(p.stat().st_size for p in step.iterdir() if p.is_file()) \
            if step is not None and step.is_dir() else 0
        free = free_bytes(folder)
    except OSError:
        return 0
    if not need:  # rank 0 holds one model-parallel piece of about 1/(TP x PP) of the model
        params = list(engine.module.parameters())
        per_param = (params[0].element_size() if params else 4) + OPTIMIZER_BYTES
        need = (sum(p.numel() for p in params) * per_param * get_tensor_model_parallel_world_size()
                * get_pipeline_model_parallel_world_size())
    if free < need:
        print(f"warning: {folder} has {_size(free)} free, less than the {_size(need)} a "
              f"checkpoint takes; saving iteration {iteration} may fail", file=sys.stderr,
              flush=True)
    return need


def folder_size(folder: Path) -> str:
    """What the files of `folder` take, for the line that reports a save."""
    try:
        return _size(sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file()))
    except OSError:
        return "size unknown"


def free_bytes(folder: Path) -> int:
    existing = next(p for p in [folder, *folder.resolve().parents] if p.exists())
    return shutil.disk_usage(existing).free


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


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


def check_resume(folder) -> Optional[dict]:
    """Before the engine is built (minutes at scale): the checkpoint `latest` names must be of
    this run's tensor x pipeline split, and every file of it must load. Returns this rank's
    random state, for `load`."""
    step = tag_folder(folder)
    layout = meta_of(step / META)["layout"]
    tp, pp = get_tensor_model_parallel_world_size(), get_pipeline_model_parallel_world_size()
    if (layout["tensor"], layout["pipeline"]) != (tp, pp):
        raise CheckpointError(
            f"{step}: saved at tensor x pipeline parallel {layout['tensor']} x "
            f"{layout['pipeline']}, this run is {tp} x {pp}; export it "
            "with python -m glm130b.checkpoint.export and start from that with --load")
    return _check_files(step, layout["world"] == dist.get_world_size())


def load(engine, folder, rng: Optional[dict]) -> dict:
    """Restore model, optimizer, loss scaler and this rank's random streams (`rng`, from
    `check_resume`); return the trainer's state (iteration, consumed samples, ...)."""
    step = tag_folder(folder)
    engine.checkpoint_engine = AtomicCheckpointEngine()
    path, client = engine.load_checkpoint(str(step.parent), tag=step.name,
                                          load_lr_scheduler_states=False)
    if path is None:
        raise CheckpointError(f"{step}: DeepSpeed could not load this checkpoint")
    if rng is not None:
        _set_rng_state(rng)
    trainer = client.get("trainer") if isinstance(client, dict) else None
    if not isinstance(trainer, dict):
        raise CheckpointError(f"{step}: DeepSpeed's files hold no trainer state (not a "
                              "checkpoint of glm130b.pretrain)")
    return trainer


def _check_files(step: Path, same_world: bool) -> Optional[dict]:
    """Every rank checks a share of the checkpoint's files and its own random state; a problem
    found anywhere is raised everywhere. Returns this rank's random state (None when the
    checkpoint was saved by a different number of ranks: their streams do not map onto
    these)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    rng, problem = None, damaged_files(sorted(step.glob("*.pt"))[rank::world])
    if problem is None and same_world:
        try:
            rng = _read_rng(rng_file(step, rank))
        except CheckpointError as e:
            problem = str(e)
    problems = [None] * world
    dist.all_gather_object(problems, problem)
    first = next((p for p in problems if p), None)
    if first:
        raise CheckpointError(first)
    return rng


def _read_rng(path: Path) -> dict:
    state = load_file(path)
    missing = [k for k in ("torch", "cuda", "tracker") if not isinstance(state, dict)
               or k not in state]
    if missing or not isinstance(state["torch"], torch.Tensor):
        raise CheckpointError(f"{path}: damaged, not a random-state file (no "
                              f"{', '.join(missing) or 'torch state'})")
    return state
