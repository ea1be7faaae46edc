"""Joining the processes a launcher started (torchrun, the DeepSpeed launcher, SLURM's srun, or
none), and sending Python objects between them. Every entry point starts here, so the rank layout
is the same whichever launcher started the job, and every process a launcher started ends with
it."""
from __future__ import annotations

import ctypes
import os
import re
import signal
import socket
import sys
import threading
import time
from typing import Mapping, Optional

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
    # after the watch: srun ends its tasks itself, and the LOCAL_RANK set here is no launcher's
    os.environ.update(environment_from_slurm(os.environ))
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


SLURM_PORT_BASE = 20000  # MASTER_PORT = base + job id % span: jobs sharing a node differ
SLURM_PORT_SPAN = 10000


def environment_from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    """torch's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for a task that `srun`
    started (one per device), so that `srun python -m glm130b.pretrain ...` needs no wrapper;
    nothing where a launcher has set them already, or outside SLURM. MASTER_ADDR and
    MASTER_PORT given in the environment win."""
    if "RANK" in env or "WORLD_SIZE" in env or "SLURM_PROCID" not in env \
            or "SLURM_NTASKS" not in env:
        return {}
    rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    local = int(env.get("SLURM_LOCALID", "0"))
    _check_block_layout(env, rank, world, local)
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") \
        or env.get("SLURM_NODELIST") or "127.0.0.1"
    port = SLURM_PORT_BASE + int(env.get("SLURM_JOB_ID", "0")) % SLURM_PORT_SPAN
    return dict(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local),
                MASTER_ADDR=env.get("MASTER_ADDR") or expand_nodelist(nodelist)[0],
                MASTER_PORT=env.get("MASTER_PORT") or str(port))


def _check_block_layout(env: Mapping[str, str], rank: int, world: int, local: int) -> None:
    """Tensor-parallel ranks must share a node, as under torchrun: refuse srun's cyclic or
    arbitrary task distributions, which would scatter them."""
    nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 0)
    if "SLURM_NODEID" not in env or nodes <= 0 or world % nodes:
        return
    per_node = world // nodes
    if rank != int(env["SLURM_NODEID"]) * per_node + local:
        raise UsageError(f"SLURM task {rank} is local task {local} of node "
                         f"{env['SLURM_NODEID']}: start with srun --distribution=block and the "
                         "same --ntasks-per-node on every node")


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list in full: "gpu[01-03,07],login" -> gpu01 gpu02 gpu03 gpu07
    login (zero padding kept; several bracket groups in one name expand in turn)."""
    hosts = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist):
        match = re.search(r"\[([^\]]*)\]", item)
        if not match:
            hosts.append(item)
            continue
        head, tail = item[:match.start()], item[match.end():]
        for part in match.group(1).split(","):
            low, _, high = part.partition("-")
            numbers = range(int(low), int(high or low) + 1)
            hosts += expand_nodelist(",".join(f"{head}{n:0{len(low)}d}{tail}" for n in numbers))
    return hosts


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
