"""Joining the processes a launcher started (torchrun, the DeepSpeed launcher, or none), and
sending Python objects between them. Every entry point starts here, so the rank layout is the
same whichever launcher started the job, and every process a launcher started ends with it."""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading
import time
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import UsageError
from .state import (get_pipeline_model_parallel_world_size, get_tensor_model_parallel_world_size,
                    initialize_model_parallel, model_parallel_is_initialized)


def initialize_distributed(tensor_parallel: int = 1, pipeline_parallel: int = 1, *,
                           device: Optional[str] = None, local_rank: Optional[int] = None,
                           always: bool = False) -> torch.device:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR, ... in the
    environment), split it into tensor, pipeline and data-parallel groups, and return this
    rank's device: `device` if given, else cuda:<local rank> when CUDA is there, else the CPU.

    A single process joins no group unless `always` (DeepSpeed needs one): then a group of one
    on a free loopback port is made for a process that no launcher started."""
    exit_with_launcher()
    if always and "WORLD_SIZE" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", local_rank or 0))
    if device not in (None, "cuda"):
        chosen = torch.device(device)
    else:
        chosen = (torch.device("cuda", local_rank) if torch.cuda.is_available()
                  else torch.device("cpu"))
    if (world > 1 or always) and not dist.is_initialized():
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    if dist.is_initialized():
        world = dist.get_world_size()
        if world % (tensor_parallel * pipeline_parallel):
            raise UsageError(f"{world} processes do not divide into tensor-parallel size "
                             f"{tensor_parallel} x pipeline-parallel size {pipeline_parallel}")
        layout = (get_tensor_model_parallel_world_size(), get_pipeline_model_parallel_world_size())
        if not model_parallel_is_initialized() or layout != (tensor_parallel, pipeline_parallel):
            # generate joins early (rank 0 reads the input for all), then loads the model
            initialize_model_parallel(tensor_parallel, pipeline_parallel)
    elif tensor_parallel * pipeline_parallel != 1:
        raise UsageError(f"tensor-parallel size {tensor_parallel} x pipeline-parallel size "
                         f"{pipeline_parallel} needs as many processes: launch with torchrun "
                         "--nproc_per_node N")
    return chosen


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (itself when there is no process group)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_launcher_decided = False
PR_SET_PDEATHSIG = 1
DEEPSPEED_NODE_LAUNCHER = b"deepspeed.launcher.launch"
LAUNCHER_GRACE_S = 30.0  # what torchrun and DeepSpeed's launcher give between SIGTERM and SIGKILL


def exit_with_launcher(grace_s: float = LAUNCHER_GRACE_S, poll_s: float = 0.5) -> None:
    """End this process when the launcher that started it dies, even by kill -9, rather than
    train on as an orphan that nobody stops and that goes on saving.

    A launcher that dies is taken as one that relays SIGTERM, as torchrun and DeepSpeed's
    launcher do when they are stopped: the trainer saves at the end of its step and exits (a
    tiny model within a second or two), other entry points end as SIGTERM ends them, and a
    process still there `grace_s` later (a save stuck on a rank that is gone) exits at once.
    Either way nothing is lost: saves are atomic, `latest` moves last, and the next start
    removes what an interrupted save left.

    Only for a process a launcher started (LOCAL_RANK set before this process set it itself):
    a plain `python -m ...`, under nohup or not, is left alone. On Linux the kernel sends the
    SIGTERM when the parent dies (PR_SET_PDEATHSIG); a thread watches as well, for the grace,
    for other systems, and for the DeepSpeed launcher, whose per-node process outlives a killed
    `deepspeed` command: there the thread also watches the parent's parent."""
    global _launcher_decided
    if _launcher_decided:
        return
    _launcher_decided = True
    if "LOCAL_RANK" not in os.environ:
        return
    parent = os.getppid()
    kernel = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            kernel = libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            pass
    grandparent = _parent_of(parent) if DEEPSPEED_NODE_LAUNCHER in _cmdline(parent) else None
    threading.Thread(target=_watch, args=(parent, grandparent, kernel, grace_s, poll_s),
                     daemon=True, name="glm130b-launcher-watch").start()


def _watch(parent: int, grandparent: Optional[int], kernel: bool, grace_s: float,
           poll_s: float) -> None:
    while True:
        if os.getppid() != parent:
            gone, signalled = parent, kernel
            break
        if grandparent is not None and _parent_of(parent) != grandparent:
            gone, signalled = grandparent, False
            break
        time.sleep(poll_s)
    print(f"glm130b: the launcher (pid {gone}) is gone; stopping as on SIGTERM (at once if "
          f"still running in {grace_s:.0f} s)", file=sys.stderr, flush=True)
    if not signalled:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _parent_of(pid: int) -> Optional[int]:
    """A process's parent from /proc (None where there is no /proc, or it has gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # "pid (name) state ppid ...": the name may hold spaces and parentheses.
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
