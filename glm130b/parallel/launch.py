"""Joining the processes a launcher started (torchrun, the DeepSpeed launcher, or none), and
sending Python objects between them. Every entry point starts here, so the rank layout is the
same whichever launcher started the job."""
from __future__ import annotations

import os
import socket
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import UsageError
from .state import initialize_model_parallel


def initialize_distributed(tensor_parallel: int = 1, pipeline_parallel: int = 1, *,
                           device: Optional[str] = None, local_rank: Optional[int] = None,
                           always: bool = False) -> torch.device:
    """Join the process group the launcher describes (RANK, WORLD_SIZE, MASTER_ADDR, ... in the
    environment), split it into tensor, pipeline and data-parallel groups, and return this
    rank's device: `device` if given, else cuda:<local rank> when CUDA is there, else the CPU.

    A single process joins no group unless `always` (DeepSpeed needs one): then a group of one
    on a free loopback port is made for a process that no launcher started."""
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
