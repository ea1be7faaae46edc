"""Self-attention with fused per-head QKV, rotary positions and GLM's FP32 softmax."""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GLMConfig
from ..parallel import (ColumnParallelLinear, RowParallelLinear, get_rng_tracker,
                        get_tensor_model_parallel_world_size)
from .init import fused_qkv, xavier_normal
from .rotary import apply_rotary


class KVCache:
    """Keys and values of every layer for the tokens seen so far, [b, heads, s, d] each."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def update(self, layer_id: int, k: torch.Tensor, v: torch.Tensor):
        if layer_id == len(self.keys):
            self.keys.append(k)
            self.values.append(v)
        else:
            self.keys[layer_id] = torch.cat((self.keys[layer_id], k), dim=2)
            self.values[layer_id] = torch.cat((self.values[layer_id], v), dim=2)
        return self.keys[layer_id], self.values[layer_id]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (beam search picks and repeats beams)."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]


def reference_attention(q, k, v, blocked, layer_id: int, dropout: float = 0.0):
    """The reference's arithmetic: q pre-divided by sqrt(d)*(layer+1) so half-precision scores
    cannot overflow, then scores multiplied back by (layer+1) in FP32, blocked places set to
    -10000 (not -inf), softmax in FP32."""
    coeff = float(layer_id + 1)
    q = q / (math.sqrt(q.shape[-1]) * coeff)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * coeff
    probs = F.softmax(scores.masked_fill(blocked, -10000.0), dim=-1).to(v.dtype)
    if dropout:
        probs = F.dropout(probs, dropout)
    return torch.matmul(probs, v)


def attention_mask_for(impl: str, blocked: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mask in the form an attention path takes, made once per forward for every layer.
    The reference path fills blocked places itself; SDPA gets the reference's -10000 as an
    additive bias rather than a boolean mask, so a row with every key blocked (batch padding)
    stays finite where a boolean mask can give NaN on GPU kernels, NaN that would leak into
    other rows through 0 * NaN."""
    if impl == "reference":
        return blocked
    zeros = torch.zeros(blocked.shape, dtype=dtype, device=blocked.device)
    return zeros.masked_fill(blocked, -10000.0)


class SelfAttention(nn.Module):
    def __init__(self, config: GLMConfig, layer_id: int):
        super().__init__()
        h, heads = config.hidden_size, config.num_attention_heads
        world = get_tensor_model_parallel_world_size()
        if heads % world:
            raise ValueError(f"{heads} attention heads do not split over {world} ranks")
        self.layer_id, self.head_dim, self.local_heads = layer_id, config.head_dim, heads // world
        self.impl, self.dropout = config.attention_impl, config.attention_dropout
        # Column split by whole heads: the per-head [q, k, v] row layout keeps heads contiguous.
        self.query_key_value = ColumnParallelLinear(
            h, 3 * h, init_method=fused_qkv(h, heads, config.deepnorm_beta))
        self.dense = RowParallelLinear(h, h, init_method=xavier_normal(config.deepnorm_beta, h, h))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor, kv_cache: Optional[KVCache] = None) -> torch.Tensor:
        """mask: from `attention_mask_for` (bool, True = blocked, or an additive bias)."""
        b, s, _ = x.shape
        qkv = self.query_key_value(x).view(b, s, self.local_heads, 3 * self.head_dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.head_dim, dim=-1))
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_id, k, v)
        dropout = self.dropout if self.training else 0.0
        # This rank's heads draw their dropout from its own stream.
        with get_rng_tracker().fork() if dropout else contextlib.nullcontext():
            if self.impl == "reference":
                context = reference_attention(q, k, v, mask, self.layer_id, dropout)
            else:
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                         dropout_p=dropout)
        return self.dense(context.transpose(1, 2).reshape(b, s, -1))
