"""The fused kernel: y = x · (q · scale)ᵀ with q read as stored (int8, or two int4 per byte).

Importing this module needs Triton; `kernels.py` imports it lazily and falls back to the pure
path without it. Each program computes a [BLOCK_M, BLOCK_N] tile of y, unpacking a tile
of weights in registers per step of the reduction. The row scale is constant along the
reduction, so it multiplies the fp32 accumulator once at the end instead of every weight.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _quantized_matmul_kernel(x_ptr, w_ptr, s_ptr, y_ptr, M, N, K,
                             stride_xm, stride_xk, stride_wn, stride_wk, stride_ym, stride_yn,
                             BITS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    x_rows, w_cols = x_ptr + rm[:, None] * stride_xm, w_ptr + rn[None, :] * stride_wn
    m_ok, n_ok = rm[:, None] < M, rn[None, :] < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        if BITS == 8:
            rk = k0 + tl.arange(0, BLOCK_K)
            x = tl.load(x_rows + rk[None, :] * stride_xk, mask=m_ok & (rk[None, :] < K), other=0.0)
            w = tl.load(w_cols + rk[:, None] * stride_wk, mask=(rk[:, None] < K) & n_ok, other=0)
            acc += tl.dot(x, w.to(x.dtype))
        else:
            # Byte j holds columns 2j (high nibble) and 2j+1 (low): rather than interleave the
            # nibbles, multiply the high ones by x's even columns and the low ones by its odd
            # columns. Shifting to the top of an int32 and back sign-extends a nibble.
            rj = k0 // 2 + tl.arange(0, BLOCK_K // 2)
            j_ok = rj[None, :] < K // 2
            x_even = tl.load(x_rows + (2 * rj[None, :]) * stride_xk, mask=m_ok & j_ok, other=0.0)
            x_odd = tl.load(x_rows + (2 * rj[None, :] + 1) * stride_xk, mask=m_ok & j_ok,
                            other=0.0)
            byte = tl.load(w_cols + rj[:, None] * stride_wk, mask=(rj[:, None] < K // 2) & n_ok,
                           other=0).to(tl.int32)
            acc += tl.dot(x_even, ((byte << 24) >> 28).to(x_even.dtype))
            acc += tl.dot(x_odd, ((byte << 28) >> 28).to(x_odd.dtype))
    scale = tl.load(s_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    y = (acc * scale[None, :]).to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, y, mask=m_ok & n_ok)


def matmul(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """x [M, K] (fp16/bf16), qweight [N, K·bits/8] int8, scale [N] -> y [M, N] in x's dtype."""
    (m, k), n = x.shape, qweight.shape[0]
    if qweight.shape[1] * 8 // bits != k:
        raise ValueError(f"weight {tuple(qweight.shape)} at {bits} bits does not take {k} inputs")
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    # Decoding (a few rows) is bound by reading weights: narrow tiles give more programs to
    # spread the weight over the SMs. Longer inputs get square tiles.
    bm, bn, bk = (16, 32, 128) if m <= 16 else (64, 64, 64)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _quantized_matmul_kernel[grid](x, qweight, scale, y, m, n, k, x.stride(0), x.stride(1),
                                   qweight.stride(0), qweight.stride(1), y.stride(0), y.stride(1),
                                   BITS=bits, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                                   num_warps=4, num_stages=3)
    return y
