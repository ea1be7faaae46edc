"""Process groups for tensor, pipeline and data parallelism.

Ranks are laid out as Megatron, the reference and DeepSpeed's pipeline topology lay them out:
tensor-parallel groups are runs of consecutive ranks (so a node's fast links carry the
per-layer all-reduces), data parallel comes next, pipeline stages are outermost:

    rank = stage * (data * tensor) + replica * tensor + tensor_rank

Without initialisation every size is 1, which is how the model runs in one process.
"""
from __future__ import annotations

import torch.distributed as dist

_TP_GROUP = None
_PP_GROUP = None
_DP_GROUP = None
_PP_RANKS: list[int] = []


def initialize_model_parallel(tensor_model_parallel_size: int = 1,
                              pipeline_model_parallel_size: int = 1) -> None:
    """Split the initialised world into tensor, pipeline and data-parallel groups."""
    global _TP_GROUP, _PP_GROUP, _DP_GROUP, _PP_RANKS
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed must be initialised before model parallelism")
    world, rank = dist.get_world_size(), dist.get_rank()
    tp, pp = tensor_model_parallel_size, pipeline_model_parallel_size
    if tp < 1 or pp < 1 or world % (tp * pp):
        raise ValueError(f"world size {world} is not divisible by tensor-parallel size {tp} "
                         f"x pipeline-parallel size {pp}")
    dp = world // (tp * pp)
    # Every rank must create every group, in the same order.
    for stage in range(pp):
        for replica in range(dp):
            start = stage * dp * tp + replica * tp
            group = dist.new_group(list(range(start, start + tp)))
            if start <= rank < start + tp:
                _TP_GROUP = group
    for stage in range(pp):
        for t in range(tp):
            ranks = [stage * dp * tp + replica * tp + t for replica in range(dp)]
            group = dist.new_group(ranks)
            if rank in ranks:
                _DP_GROUP = group
    for replica in range(dp):
        for t in range(tp):
            ranks = [stage * dp * tp + replica * tp + t for stage in range(pp)]
            group = dist.new_group(ranks)
            if rank in ranks:
                _PP_GROUP, _PP_RANKS = group, ranks


def destroy_model_parallel() -> None:
    global _TP_GROUP, _PP_GROUP, _DP_GROUP, _PP_RANKS
    _TP_GROUP = _PP_GROUP = _DP_GROUP = None
    _PP_RANKS = []


def is_rank0() -> bool:
    """The process that reads input and writes output (rank 0 of the world, or the only one)."""
    return not dist.is_initialized() or dist.get_rank() == 0


def model_parallel_is_initialized() -> bool:
    return _TP_GROUP is not None


def _size(group) -> int:
    return dist.get_world_size(group) if group is not None else 1


def _rank(group) -> int:
    return dist.get_rank(group) if group is not None else 0


def get_tensor_model_parallel_group():
    return _TP_GROUP


def get_tensor_model_parallel_world_size() -> int:
    return _size(_TP_GROUP)


def get_tensor_model_parallel_rank() -> int:
    return _rank(_TP_GROUP)


def get_pipeline_model_parallel_group():
    return _PP_GROUP


def get_pipeline_model_parallel_world_size() -> int:
    return _size(_PP_GROUP)


def get_pipeline_model_parallel_rank() -> int:
    return _rank(_PP_GROUP)


def get_pipeline_model_parallel_ranks() -> list[int]:
    """Global ranks of this rank's pipeline, first stage first."""
    return list(_PP_RANKS) or [dist.get_rank() if dist.is_initialized() else 0]


def get_data_parallel_group():
    return _DP_GROUP


def get_data_parallel_world_size() -> int:
    return _size(_DP_GROUP)


def get_data_parallel_rank() -> int:
    return _rank(_DP_GROUP)
