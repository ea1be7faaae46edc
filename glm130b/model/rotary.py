"""1-D rotary position embedding on the whole head dimension (GPT-NeoX rotate-half pairing).

Angles are computed from the position ids directly rather than gathered from a cached table:
the same numbers (one product, one cos/sin per entry), without a table to grow or a host sync
to find the largest position. `fp16_tables` rounds exactly where the released model's code did
(inv_freq, positions, products and cos/sin all in fp16).
"""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    def __init__(self, dim: int, base: float = 10000.0, fp16_tables: bool = False):
        super().__init__()
        self.dim, self.base, self.fp16_tables = dim, base, fp16_tables

    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for `position_ids` [b, s], shaped [b, 1, s, dim] to broadcast over heads."""
        # inv_freq is recomputed (dim/2 numbers) rather than kept as a buffer, so nothing is
        # left on the meta device after a checkpoint is assigned into a meta-built model.
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32,
                                device=position_ids.device) / self.dim
        inv_freq = 1.0 / (self.base ** exponent)
        dtype = torch.float16 if self.fp16_tables else torch.float32
        angles = position_ids.to(dtype).unsqueeze(-1) * inv_freq.to(dtype)
        angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [b, heads, s, dim]."""
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)
