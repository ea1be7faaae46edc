"""Linear layers and the embedding, split across the tensor-parallel group.

The model asks for these and never looks at the split. Each parameter records how it is split
(`tensor_model_parallel`, `partition_dim`, `partition_stride`): DeepSpeed needs the first to
compute gradient norms under TP, the checkpoint tools and the memory planner read the rest.

Initialisation draws the whole (global) matrix from the default generator and keeps this rank's
shard, so a model built at any TP degree from one seed holds the same numbers.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .mappings import (copy_to_tensor_model_parallel_region,
                       gather_from_tensor_model_parallel_region,
                       reduce_from_tensor_model_parallel_region,
                       scatter_to_tensor_model_parallel_region)
from .state import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

InitMethod = Callable[[torch.Tensor], None]


def _divide(n: int, world: int, what: str) -> int:
    if n % world:
        raise ValueError(f"{what} ({n}) is not divisible by the tensor-parallel size {world}")
    return n // world


def shard(full: torch.Tensor, dim: int, stride: int = 1, rank: Optional[int] = None,
          world: Optional[int] = None) -> torch.Tensor:
    """This rank's piece of `full`: with stride s the tensor is s blocks along `dim` (GeGLU's two
    halves), and the rank takes its slice of every block."""
    world = get_tensor_model_parallel_world_size() if world is None else world
    rank = get_tensor_model_parallel_rank() if rank is None else rank
    blocks = full.chunk(stride, dim=dim)
    return torch.cat([b.chunk(world, dim=dim)[rank] for b in blocks], dim=dim)


def merge(pieces: list[torch.Tensor], dim: int, stride: int = 1) -> torch.Tensor:
    """The inverse of `shard`: the whole tensor from every rank's piece, in rank order."""
    blocks = [p.chunk(stride, dim=dim) for p in pieces]
    return torch.cat([torch.cat([b[i] for b in blocks], dim=dim) for i in range(stride)], dim=dim)


def _mark(param: torch.Tensor, dim: int, stride: int = 1) -> None:
    param.tensor_model_parallel = True
    param.model_parallel = True
    param.partition_dim = dim
    param.partition_stride = stride


def _init_sharded(param: nn.Parameter, global_shape, init_method: InitMethod, dim: int,
                  stride: int) -> None:
    if param.is_meta:
        return
    full = torch.empty(global_shape, dtype=torch.float32)
    init_method(full)
    with torch.no_grad():
        param.copy_(shard(full, dim, stride))


class ColumnParallelLinear(nn.Module):
    """Y = XA + b with A split by output rows; Y stays split unless `gather_output`."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 gather_output: bool = False, stride: int = 1,
                 init_method: InitMethod = nn.init.xavier_normal_):
        super().__init__()
        world = get_tensor_model_parallel_world_size()
        self.in_features, self.out_features = in_features, out_features
        self.gather_output, self.stride, self.init_method = gather_output, stride, init_method
        local = _divide(out_features, world * stride, "output features / stride") * stride
        self.weight = nn.Parameter(torch.empty(local, in_features))
        _mark(self.weight, 0, stride)
        self.bias = nn.Parameter(torch.empty(local)) if bias else None
        if bias:
            _mark(self.bias, 0, stride)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_sharded(self.weight, (self.out_features, self.in_features), self.init_method, 0,
                      self.stride)
        if self.bias is not None and not self.bias.is_meta:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(copy_to_tensor_model_parallel_region(x), self.weight, self.bias)
        return gather_from_tensor_model_parallel_region(y) if self.gather_output else y


class RowParallelLinear(nn.Module):
    """Y = XA + b with A split by input columns; partial products are summed across ranks and
    the (replicated) bias is added once, after the reduction."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 input_is_parallel: bool = True,
                 init_method: InitMethod = nn.init.xavier_normal_):
        super().__init__()
        world = get_tensor_model_parallel_world_size()
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel, self.init_method = input_is_parallel, init_method
        self.weight = nn.Parameter(torch.empty(out_features, _divide(in_features, world,
                                                                     "input features")))
        _mark(self.weight, 1)
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_sharded(self.weight, (self.out_features, self.in_features), self.init_method, 1, 1)
        if self.bias is not None and not self.bias.is_meta:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tensor_model_parallel_region(x)
        y = reduce_from_tensor_model_parallel_region(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Each rank owns a contiguous range of token ids; ids outside it look up zeros and the
    all-reduce assembles the embedding."""

    def __init__(self, num_embeddings: int, embedding_dim: int,
                 init_method: InitMethod = nn.init.normal_):
        super().__init__()
        world, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
        self.num_embeddings, self.embedding_dim, self.init_method = (num_embeddings,
                                                                     embedding_dim, init_method)
        local = _divide(num_embeddings, world, "vocabulary size")
        self.vocab_start, self.vocab_end = rank * local, (rank + 1) * local
        self.weight = nn.Parameter(torch.empty(local, embedding_dim))
        _mark(self.weight, 0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _init_sharded(self.weight, (self.num_embeddings, self.embedding_dim), self.init_method,
                      0, 1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if get_tensor_model_parallel_world_size() == 1:
            return F.embedding(input_ids, self.weight)
        outside = (input_ids < self.vocab_start) | (input_ids >= self.vocab_end)
        local_ids = (input_ids - self.vocab_start).masked_fill(outside, 0)
        out = F.embedding(local_ids, self.weight).masked_fill(outside.unsqueeze(-1), 0.0)
        return reduce_from_tensor_model_parallel_region(out)


def parallel_lm_logits(hidden: torch.Tensor, word_embeddings: torch.Tensor,
                       parallel_output: bool = False) -> torch.Tensor:
    """Logits against the (vocab-split) tied embedding; gathered over the vocabulary unless the
    caller wants this rank's slice (vocab-parallel cross entropy)."""
    logits = F.linear(copy_to_tensor_model_parallel_region(hidden), word_embeddings)
    return logits if parallel_output else gather_from_tensor_model_parallel_region(logits)
