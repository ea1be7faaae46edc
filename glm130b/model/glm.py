"""The GLM-130B model: embedding, DeepNorm blocks, final LayerNorm, logits tied to the embedding.

Parameter names are the reference checkpoint's (`transformer.word_embeddings.weight`,
`transformer.layers.N.attention.query_key_value.weight`, ...), so its state dicts load as is.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..config import GLMConfig
from ..parallel import VocabParallelEmbedding, parallel_lm_logits
from .attention import KVCache, attention_mask_for
from .init import normal
from .layer import GLMBlock
from .masks import AttentionMask, dense_mask
from .rotary import RotaryEmbedding


class _ScaleGradient(torch.autograd.Function):
    """Embedding gradient shrink: the value passes unchanged, the gradient is scaled by alpha."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.alpha, None


def shrink_gradient(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x if alpha == 1.0 or not torch.is_grad_enabled() else _ScaleGradient.apply(x, alpha)


class EmbeddingGradientShrink:
    """A module that applies the embedding gradient shrink (reference §1.10) holds the alpha it
    applies now, `shrink_alpha`: the config's to begin with; the trainer moves it along
    --shrink-embedding-gradient-steps with `set_embedding_gradient_shrink`. A runtime setting
    of the module, not of the config, which every module shares and which never changes."""
    shrink_alpha: float


def set_embedding_gradient_shrink(module: nn.Module, alpha: float) -> None:
    """Shrink the embedding gradient by `alpha` from the next forward on, in every module under
    `module` that applies it (`GLM`, or the pipeline's embedding on the stages that hold it)."""
    for m in module.modules():
        if isinstance(m, EmbeddingGradientShrink):
            m.shrink_alpha = alpha


def embed(embedding: VocabParallelEmbedding, input_ids: torch.Tensor, config: GLMConfig,
          training: bool, shrink_alpha: float) -> torch.Tensor:
    """The embedding output, in training gradient-shrunk by `shrink_alpha` and dropped out."""
    h = embedding(input_ids)
    if training:
        h = shrink_gradient(h, shrink_alpha)
    return F.dropout(h, config.hidden_dropout, training)


def tied_logits(embedding: VocabParallelEmbedding, h: torch.Tensor, config: GLMConfig,
                training: bool, parallel_output: bool, shrink_alpha: float) -> torch.Tensor:
    """Logits from the embedding matrix; with `shrink_logit_embedding_gradient` its gradient
    from here is shrunk in training as well."""
    weight = embedding.weight
    if training and config.shrink_logit_embedding_gradient:
        weight = shrink_gradient(weight, shrink_alpha)
    return parallel_lm_logits(h, weight, parallel_output)


class GLM(nn.Module, EmbeddingGradientShrink):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.config = config
        self.shrink_alpha = config.shrink_embedding_gradient_alpha
        self.transformer = nn.ModuleDict(dict(
            word_embeddings=VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                   init_method=normal(config.init_method_std)),
            layers=nn.ModuleList(GLMBlock(config, i) for i in range(config.num_layers)),
            final_layernorm=nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon),
        ))
        self.rotary = RotaryEmbedding(config.head_dim, fp16_tables=config.rotary_fp16_tables)

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Union[AttentionMask, torch.Tensor, None] = None,
                kv_cache: Optional[KVCache] = None, parallel_output: bool = False) -> torch.Tensor:
        """Logits [b, s, vocab] (this rank's vocabulary slice if `parallel_output`).

        attention_mask: an `AttentionMask`, the reference's [b, 1, q, k] bool (True = blocked),
        or None for causal attention. position_ids default to counting on from the cache.
        kv_cache: a `KVCache`, extended in place with this call's keys and values.
        """
        b, s = input_ids.shape
        past = len(kv_cache) if kv_cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + s, device=input_ids.device).expand(b, s)
        blocked = dense_mask(attention_mask, b, s, past, input_ids.device)
        rope = self.rotary(position_ids)

        h = embed(self.transformer.word_embeddings, input_ids, self.config, self.training,
                  self.shrink_alpha)
        mask = attention_mask_for(self.config.attention_impl, blocked, h.dtype)
        for layer in self.transformer.layers:
            h = layer(h, rope, mask, kv_cache)
        h = self.transformer.final_layernorm(h)
        return tied_logits(self.transformer.word_embeddings, h, self.config, self.training,
                           parallel_output, self.shrink_alpha)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
