"""Where a run starts, decided once on rank 0 and told to every rank: from a training
checkpoint (resumed exactly), from reference-layout weights, or from scratch. Before anything
is written, the --save folder is checked so that no run is overwritten, then cleaned of what an
interrupted save left; the train log is cut back to the starting iteration, so that no
iteration appears in it twice.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch.distributed as dist

from ..checkpoint.deepspeed_layout import (META, TAG, is_training_checkpoint, read_meta,
                                           step_folders)
from ..checkpoint.sat import write_latest
from ..errors import CheckpointError, GLMError, UsageError
from ..files import atomic_write_text, leftover_temporaries
from ..parallel import broadcast_object
from .options import TrainingConfig
from .schedules import schedule_changes


@dataclass
class Start:
    iteration: int = 0
    consumed_samples: int = 0
    resume: bool = False                     # --load is a checkpoint of this trainer
    reference_weights: Optional[str] = None  # --load is a checkpoint in the reference layout
    schedule: dict = field(default_factory=dict)  # the resumed checkpoint's, where recorded


def plan_start(training: TrainingConfig) -> Start:
    """Every rank's start. What rank 0 finds wrong is raised on every rank, so that all stop
    with the same line and none waits for the others."""
    found = None
    if dist.get_rank() == 0:
        try:
            found = _plan(training)
        except (GLMError, OSError) as e:
            found = e
    found = broadcast_object(found)
    if isinstance(found, BaseException):
        raise found
    return found


def _plan(training: TrainingConfig) -> Start:
    start = Start()
    if training.load and is_training_checkpoint(training.load):
        meta = read_meta(training.load)
        start = Start(meta["iteration"], meta["consumed_samples"], resume=True,
                      schedule=meta.get("schedule") or {})
    elif training.load:
        start.reference_weights = training.load
    if training.save:
        prepare_save_folder(Path(training.save), start.iteration, training.overwrite_checkpoints)
    if training.train_log:
        cut_log(Path(training.train_log), start.iteration)
    return start


def check_schedule(saved: dict, now: dict) -> None:
    """Megatron's rule: a resume keeps the checkpoint's schedule unless told otherwise. A longer
    --train-iters implies a later decay: the decay is then to be given (--lr-decay-samples).
    Checked on every rank alike, after the checkpoint's files (what is damaged comes first)."""
    changes = schedule_changes(saved, now)
    if not changes:
        return
    keep = (f"; --lr-decay-samples {saved['lr_decay_samples']} keeps the checkpoint's decay"
            if "lr_decay_samples" in saved and saved["lr_decay_samples"] != now["lr_decay_samples"]
            else "")
    raise UsageError(f"the checkpoint's schedule differs: {', '.join(changes)}{keep}; pass "
                     "--override-opt_param-scheduler to use the new one")


def committed_iteration(save: Path) -> Optional[int]:
    """The iteration `latest` names, or None (no `latest`, or one naming no training tag)."""
    try:
        m = TAG.match((save / "latest").read_text().strip())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def prepare_save_folder(save: Path, start: int, overwrite: bool) -> None:
    """Refuse a folder holding checkpoints later than `start` (unless `overwrite`: then they
    go), and remove what interrupted saves left: folders newer than `latest` that never got
    their metadata (written once every rank had finished), and temporary files."""
    steps = step_folders(save)
    committed = committed_iteration(save)
    partial = sorted(n for n, p in steps.items()
                     if committed is not None and n > committed and not (p / META).is_file())
    later = sorted(n for n in steps if n > start and n not in partial)
    foreign = (save / "latest").is_file() and committed is None
    if (later or foreign) and not overwrite:
        complete = {n for n in later if (steps[n] / META).is_file()}
        raise CheckpointError(_refusal(save, start, later, committed, complete))
    doomed = partial + (later if overwrite else [])
    for n in doomed:
        shutil.rmtree(steps[n])
    if overwrite and (foreign or committed in later):
        _repoint_latest(save, [n for n in steps if n not in doomed and
                               (steps[n] / META).is_file()])
    temporaries = [t for folder in [save, *steps.values()] if folder.is_dir()
                   for t in leftover_temporaries(folder)]
    for t in temporaries:
        t.unlink(missing_ok=True)
    if doomed or temporaries:
        what = [f"global_step{n}" for n in doomed]
        what += [f"{len(temporaries)} temporary file(s)"] if temporaries else []
        print(f"glm130b.pretrain: removed from {save}: {', '.join(what)} (partial, or later "
              f"than iteration {start} with --overwrite-checkpoints)", flush=True)


def _refusal(save: Path, start: int, later: list[int], committed: Optional[int],
             complete: set[int]) -> str:
    if later and later[-1] in complete and committed in (None, start):
        # What a kill between the metadata and `latest` leaves, or a `latest` moved back.
        newest = f"global_step{later[-1]}"
        named = f"'latest' names global_step{committed}" if committed is not None else \
            "no 'latest' names it"
        return (f"{save / newest} is complete but {named}: a save interrupted just before "
                f"'latest' moved, or 'latest' moved back; to resume from it write {newest} "
                f"into {save / 'latest'}, or pass --overwrite-checkpoints to remove it")
    what = (f"checkpoints up to iteration {later[-1]} (global_step{later[-1]})" if later else
            "a checkpoint of another layout ('latest' names no global_stepN)")
    hint = f"resume it with --load {save}, " if start == 0 and later else ""
    return (f"{save} already holds {what}, later than iteration {start} where this run starts; "
            f"{hint}choose another --save folder, or pass --overwrite-checkpoints to remove them")


def _repoint_latest(save: Path, complete: list[int]) -> None:
    if complete:
        write_latest(save, f"global_step{max(complete)}")
    else:
        (save / "latest").unlink(missing_ok=True)


def cut_log(log: Path, iteration: int) -> None:
    """Move the records of iterations after `iteration` (those this run is about to repeat) and
    any torn line to LOG.bak, keeping them for whoever wants them."""
    if not log.is_file():
        return
    keep, cut = [], []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        step = _iteration_of(line)
        (keep if step is not None and step <= iteration else cut).append(line + "\n")
    if not cut:
        return
    backup = log.with_name(log.name + ".bak")
    with open(backup, "a", encoding="utf-8") as f:
        f.writelines(cut)
        f.flush()
        os.fsync(f.fileno())
    atomic_write_text(log, "".join(keep))
    print(f"glm130b.pretrain: {log}: {len(cut)} record(s) after iteration {iteration} moved to "
          f"{backup}", flush=True)


def _iteration_of(line: str) -> Optional[int]:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("iteration") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None
