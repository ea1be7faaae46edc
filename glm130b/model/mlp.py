"""GeGLU feed-forward: x1 * GELU(x2), with x1 the first half of the fused up-projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GLMConfig
from ..parallel import ColumnParallelLinear, RowParallelLinear
from .init import xavier_normal


class GeGLU(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        h, inner, beta = config.hidden_size, config.inner_hidden_size, config.deepnorm_beta
        # stride=2: under TP each rank holds [x1-slice ; x2-slice], so chunk(2) below still
        # pairs every x1 with its own x2. Both halves are DeepNorm β-scaled Xavier of [inner, h].
        self.dense_h_to_4h = ColumnParallelLinear(h, 2 * inner, stride=2,
                                                  init_method=xavier_normal(beta, h, inner))
        self.dense_4h_to_h = RowParallelLinear(inner, h, init_method=xavier_normal(beta, inner, h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.dense_h_to_4h(x).chunk(2, dim=-1)
        return self.dense_4h_to_h(x1 * F.gelu(x2))
