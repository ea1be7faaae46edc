"""Autograd-aware collectives over the tensor-parallel group (Megatron's f and g operators).

Each is the identity when the group has one rank, so the single-process model pays nothing.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .state import (get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
                    get_tensor_model_parallel_world_size)


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if get_tensor_model_parallel_world_size() == 1:
        return x
    x = x.contiguous()
    dist.all_reduce(x, group=get_tensor_model_parallel_group())
    return x


def _split_last_dim(x: torch.Tensor) -> torch.Tensor:
    world = get_tensor_model_parallel_world_size()
    if world == 1:
        return x
    return x.chunk(world, dim=-1)[get_tensor_model_parallel_rank()].contiguous()


def _gather_last_dim(x: torch.Tensor) -> torch.Tensor:
    world = get_tensor_model_parallel_world_size()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=get_tensor_model_parallel_group())
    return torch.cat(parts, dim=-1)


class _CopyToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad.clone())


class _ReduceFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_reduce(x.clone())

    @staticmethod
    def backward(ctx, grad):
        return grad


class _ScatterToRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _split_last_dim(x)

    @staticmethod
    def backward(ctx, grad):
        return _gather_last_dim(grad)


class _GatherFromRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _gather_last_dim(x)

    @staticmethod
    def backward(ctx, grad):
        return _split_last_dim(grad)


def copy_to_tensor_model_parallel_region(x):
    """Identity forward, all-reduce of the gradient backward."""
    return x if get_tensor_model_parallel_world_size() == 1 else _CopyToRegion.apply(x)


def reduce_from_tensor_model_parallel_region(x):
    """All-reduce forward, identity backward."""
    return x if get_tensor_model_parallel_world_size() == 1 else _ReduceFromRegion.apply(x)


def scatter_to_tensor_model_parallel_region(x):
    """Keep this rank's slice of the last dimension; gather the gradient backward."""
    return x if get_tensor_model_parallel_world_size() == 1 else _ScatterToRegion.apply(x)


def gather_from_tensor_model_parallel_region(x):
    """Concatenate every rank's slice of the last dimension; split the gradient backward."""
    return x if get_tensor_model_parallel_world_size() == 1 else _GatherFromRegion.apply(x)
