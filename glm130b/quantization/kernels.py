"""y = x Wᵀ for a quantised W, two ways with one meaning.

`pure_matmul` dequantises the whole weight to the activations' dtype and calls the ordinary
matmul, as the reference's CUDA extraction kernels do; it runs wherever PyTorch runs and is what
the CPU tests use. `fused_matmul` is a Triton kernel that reads the packed integers straight
from memory and applies the row scales to its fp32 accumulator, so the full-precision weight is
never written out: decoding is bound by reading weights, and INT4 reads a quarter of FP16's
bytes. On CPU, INT8 has PyTorch's own fused kernel (`torch._weight_int8pack_mm`).
`quantized_matmul` picks a fused kernel by itself when no gradient is needed and one applies
(Triton: fp16/bf16 CUDA inputs; PyTorch's: INT8 with bf16 CPU inputs); otherwise the pure
path.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from .packing import dequantize_weight


def pure_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bits: int,
                bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    return F.linear(x, dequantize_weight(qweight, scale, bits).to(x.dtype), bias)


@functools.lru_cache(maxsize=None)
def _triton_module():
    """The kernel module, or None where Triton is missing or cannot start (no GPU driver)."""
    try:
        from . import triton_matmul
    except Exception:  # ImportError, or Triton failing to find a backend at import
        return None
    return triton_matmul


def fused_available(x: torch.Tensor) -> bool:
    return (x.is_cuda and x.dtype in (torch.float16, torch.bfloat16)
            and _triton_module() is not None)


def fused_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bits: int,
                 bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Forward only (the kernel has no backward); the weight is frozen anyway."""
    module = _triton_module()
    if module is None:
        raise RuntimeError("the fused quantised matmul needs Triton")
    y = module.matmul(x.reshape(-1, x.shape[-1]), qweight, scale, bits)
    y = y.view(*x.shape[:-1], y.shape[-1])
    return y if bias is None else y + bias


def cpu_int8_available(x: torch.Tensor, bits: int) -> bool:
    # bf16 only: the kernel's fp32 variant is up to 25x slower than the pure path beyond one
    # token. Its vectorised loop reads the input dimension 8 at a time, 16 on CPUs with
    # AVX512-BF16: other widths crash the process (every GLM shape is a multiple of 16).
    return (bits == 8 and x.device.type == "cpu" and x.dtype == torch.bfloat16
            and x.shape[-1] % 16 == 0 and hasattr(torch, "_weight_int8pack_mm"))


def cpu_int8_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor,
                    bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """PyTorch's own CPU kernel for int8 weights with per-row scales: it reads the int8 matrix
    directly, so a bf16 decode step costs less than the bf16 weight would (CPU figures in
    docs/benchmarks.md), where the pure path first writes a full-precision copy."""
    y = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).contiguous(), qweight,
                                  scale.to(x.dtype))
    y = y.view(*x.shape[:-1], y.shape[-1])
    return y if bias is None else y + bias


def quantized_matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bits: int,
                     bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if not needs_grad and fused_available(x):
        return fused_matmul(x, qweight, scale, bits, bias)
    if not needs_grad and cpu_int8_available(x, bits):
        return cpu_int8_matmul(x, qweight, scale, bias)
    return pure_matmul(x, qweight, scale, bits, bias)
