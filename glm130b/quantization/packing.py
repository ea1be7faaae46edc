"""The arithmetic of weight-only quantisation, as the reference does it (reference §5).

Symmetric absmax per output row: scale_r = max_j |W_rj| / (2^(b-1) - 1), q = round(W / scale_r),
so INT8 holds [-127, 127] and INT4 [-7, 7]. INT4 stores two values per int8 byte along the
input dimension, the even column in the high nibble: byte k = (q[2k] << 4) | (q[2k+1] & 0xF).
"""
from __future__ import annotations

import torch

BITS = (4, 8)


def qmax(bits: int) -> int:
    if bits not in BITS:
        raise ValueError(f"quantisation bit width must be 4 or 8, not {bits}")
    return 2 ** (bits - 1) - 1


def _check_pairs(columns: int) -> None:
    if columns % 2:
        raise ValueError(f"INT4 packs column pairs; {columns} input features is odd")


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[..., in] int8 values in [-8, 7] -> [..., in/2] int8, even column in the high nibble."""
    _check_pairs(q.shape[-1])
    pairs = q.view(*q.shape[:-1], -1, 2).to(torch.int16)
    # Built in 0..255 and reinterpreted: no signed overflow anywhere.
    byte = ((pairs[..., 0] & 0xF) << 4) | (pairs[..., 1] & 0xF)
    return byte.to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`, as the reference: high = byte >> 4, low = (byte << 4) >> 4, the
    int8 arithmetic shifts sign-extending each nibble."""
    return torch.stack((packed >> 4, (packed << 4) >> 4), dim=-1).view(*packed.shape[:-1], -1)


def quantize_weight(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, [out] scale in the weight's dtype); INT4 comes back packed, [out, in/2].

    The division runs in the weight's dtype as the reference's does (fp16 for its checkpoints),
    except bf16, whose 8-bit mantissa cannot resolve 127 levels, which divides in fp32."""
    top = qmax(bits)
    if bits == 4:
        _check_pairs(weight.shape[-1])
    if weight.is_meta:  # shapes only (a model to plan, or to load into): meta arithmetic would
        # cost seconds for 130B
        rows, cols = weight.shape[0], weight.shape[1] * bits // 8
        return (torch.empty(rows, cols, dtype=torch.int8, device="meta"),
                torch.empty(rows, dtype=weight.dtype, device="meta"))
    w = weight.float() if weight.dtype == torch.bfloat16 else weight
    scale = (w.abs().amax(dim=-1) / top).to(weight.dtype)
    # An all-zero row has scale 0: 0/0 becomes 0, and an underflowed scale clamps to the range.
    q = torch.round(w / scale.to(w.dtype)[:, None]).nan_to_num_(0.0).clamp_(-top, top)
    q = q.to(torch.int8)
    return (pack_int4(q) if bits == 4 else q), scale


def unpack_weight(qweight: torch.Tensor, bits: int) -> torch.Tensor:
    """The int8 values [out, in] of a stored weight (INT4 unpacked)."""
    return unpack_int4(qweight) if bits == 4 else qweight


def dequantize_weight(qweight: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """q * scale_r in the scale's dtype: one rounding per element, as the reference's
    extraction kernels compute it."""
    return unpack_weight(qweight, bits).to(scale.dtype) * scale[:, None]
