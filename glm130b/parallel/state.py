"""Process groups for tensor parallelism.

Tensor-parallel groups are runs of consecutive ranks, as in Megatron and the reference, so a
node's fast links carry the per-layer all-reduces. Without initialisation everything is size 1,
which is how the model runs in one process.
"""
from __future__ import annotations

import torch.distributed as dist

_TP_GROUP = None
_DP_GROUP = None


def initialize_model_parallel(tensor_model_parallel_size: int = 1) -> None:
    """Split the initialised world into tensor-parallel groups of consecutive ranks."""
    global _TP_GROUP, _DP_GROUP
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed must be initialised before model parallelism")
    world, rank, tp = dist.get_world_size(), dist.get_rank(), tensor_model_parallel_size
    if tp < 1 or world % tp:
        raise ValueError(f"world size {world} is not divisible by tensor-parallel size {tp}")
    # Every rank must create every group, in the same order.
    for start in range(0, world, tp):
        group = dist.new_group(list(range(start, start + tp)))
        if start <= rank < start + tp:
            _TP_GROUP = group
    for offset in range(tp):
        group = dist.new_group(list(range(offset, world, tp)))
        if rank % tp == offset:
            _DP_GROUP = group


def destroy_model_parallel() -> None:
    global _TP_GROUP, _DP_GROUP
    _TP_GROUP = _DP_GROUP = None


def model_parallel_is_initialized() -> bool:
    return _TP_GROUP is not None


def get_tensor_model_parallel_group():
    return _TP_GROUP


def get_tensor_model_parallel_world_size() -> int:
    return dist.get_world_size(_TP_GROUP) if _TP_GROUP is not None else 1


def get_tensor_model_parallel_rank() -> int:
    return dist.get_rank(_TP_GROUP) if _TP_GROUP is not None else 0


def get_data_parallel_group():
    return _DP_GROUP


def get_data_parallel_world_size() -> int:
    return dist.get_world_size(_DP_GROUP) if _DP_GROUP is not None else 1


def get_data_parallel_rank() -> int:
    return dist.get_rank(_DP_GROUP) if _DP_GROUP is not None else 0
