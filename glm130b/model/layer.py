"""One GLM-130B block: DeepNorm post-LN around attention and GeGLU."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GLMConfig
from .attention import KVCache, SelfAttention
from .mlp import GeGLU


class GLMBlock(nn.Module):
    """out = α·LN(h1) + MLP(LN(h1)) with h1 = α·LN(h) + Attn(LN(h)), α = sqrt(2N).

    The stream passed between blocks is un-normalised; each block normalises it first, so every
    sub-block computes LayerNorm(α·x + f(x)) with the next LayerNorm — DeepNorm's post-LN.
    """

    def __init__(self, config: GLMConfig, layer_id: int):
        super().__init__()
        self.alpha, self.dropout = config.deepnorm_alpha, config.hidden_dropout
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.attention = SelfAttention(config, layer_id)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size,
                                                     eps=config.layernorm_epsilon)
        self.mlp = GeGLU(config)

    def forward(self, h: torch.Tensor, rope, mask: torch.Tensor,
                kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        x = self.input_layernorm(h)
        h = self.alpha * x + F.dropout(self.attention(x, rope, mask, kv_cache), self.dropout,
                                       self.training)
        y = self.post_attention_layernorm(h)
        return self.alpha * y + F.dropout(self.mlp(y), self.dropout, self.training)
