"""Column- and row-parallel linear layers holding INT8 / INT4 weights (reference §5).

Each is made from the full-precision layer it replaces and quantises that layer's local shard:
per output row, so a column-parallel rank's rows and scales are the TP=1 ones, sliced, while a
row-parallel rank's scales come from its own input columns only (quantised checkpoints are
therefore tied to their TP degree, as the reference's are).

`weight` (int8; INT4 packed as [out, in/2]) and `weight_scale` ([out], the compute dtype) are
frozen parameters under the reference's key names, so quantised checkpoints load with
`load_checkpoint` into a model quantised on the meta device, and `model.to(dtype)` casts the
scales with everything else while the integers stay integers.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..parallel import ColumnParallelLinear, RowParallelLinear
from ..parallel.mappings import (copy_to_tensor_model_parallel_region,
                                 gather_from_tensor_model_parallel_region,
                                 reduce_from_tensor_model_parallel_region,
                                 scatter_to_tensor_model_parallel_region)
from .kernels import quantized_matmul
from .packing import quantize_weight


def _frozen(t: torch.Tensor, split_dim: Optional[int] = None, stride: int = 1) -> nn.Parameter:
    """A parameter no optimiser will touch, carrying `glm130b.parallel`'s split annotations."""
    p = nn.Parameter(t, requires_grad=False)
    if split_dim is not None:
        p.tensor_model_parallel = p.model_parallel = True
        p.partition_dim, p.partition_stride = split_dim, stride
    return p


class _QuantizedLinear(nn.Module):
    def __init__(self, layer: nn.Module, bits: int, split_dim: int, stride: int = 1):
        super().__init__()
        self.bits, self.in_features, self.out_features = bits, layer.in_features, layer.out_features
        qweight, scale = quantize_weight(layer.weight.detach(), bits)
        self.weight = _frozen(qweight, split_dim, stride)
        # Column-parallel: the scales are split with the rows. Row-parallel: every rank holds
        # [out] scales (of its own columns), so the tensor is not split.
        self.weight_scale = _frozen(scale, 0 if split_dim == 0 else None, stride)
        self.bias = layer.bias

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, bias={self.bias is not None}")


class QuantizedColumnParallelLinear(_QuantizedLinear):
    """`ColumnParallelLinear` with a quantised weight: Y = X·deq(A)ᵀ + b, A split by rows."""

    def __init__(self, layer: ColumnParallelLinear, bits: int):
        super().__init__(layer, bits, split_dim=0, stride=layer.stride)
        self.gather_output = layer.gather_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = quantized_matmul(copy_to_tensor_model_parallel_region(x), self.weight,
                             self.weight_scale, self.bits, self.bias)
        return gather_from_tensor_model_parallel_region(y) if self.gather_output else y


class QuantizedRowParallelLinear(_QuantizedLinear):
    """`RowParallelLinear` with a quantised weight; the bias is added once, after the sum."""

    def __init__(self, layer: RowParallelLinear, bits: int):
        super().__init__(layer, bits, split_dim=1)
        self.input_is_parallel = layer.input_is_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_is_parallel:
            x = scatter_to_tensor_model_parallel_region(x)
        y = reduce_from_tensor_model_parallel_region(
            quantized_matmul(x, self.weight, self.weight_scale, self.bits))
        return y if self.bias is None else y + self.bias


def quantize_linear(layer: nn.Module, bits: int) -> _QuantizedLinear:
    """The quantised counterpart of a column- or row-parallel layer."""
    if isinstance(layer, ColumnParallelLinear):
        return QuantizedColumnParallelLinear(layer, bits)
    if isinstance(layer, RowParallelLinear):
        return QuantizedRowParallelLinear(layer, bits)
    raise TypeError(f"cannot quantise {type(layer).__name__}: not a column- or row-parallel "
                    "linear layer (already quantised?)")
