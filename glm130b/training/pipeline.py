"""GLM as a DeepSpeed `PipelineModule`, built from the model's own classes.

The pipeline is: tied embedding, the transformer layers, the final LayerNorm, the tied
embedding again as the output head. Between stages travel tensors only:
(hidden states, position ids, context flags, segment ids); each layer rebuilds its attention
mask from the last two, which costs far less than the layer and keeps messages small.

Parameter names differ from the plain model's (`3.attention.dense.weight` for layer 2,
`tied_modules.embed.word_embeddings.weight`);
`glm130b.checkpoint.deepspeed_layout.reference_name` maps them back to the reference's keys,
which initialisation, loading and export use.
"""
from __future__ import annotations

import torch
from deepspeed.pipe import LayerSpec, PipelineModule, TiedLayerSpec
from torch import nn

from ..config import GLMConfig
from ..model.attention import attention_mask_for
from ..model.glm import EmbeddingGradientShrink, embed, tied_logits
from ..model.init import normal
from ..model.layer import GLMBlock
from ..model.masks import AttentionMask
from ..model.rotary import RotaryEmbedding
from ..parallel import VocabParallelEmbedding


def pipeline_inputs(batch) -> tuple[torch.Tensor, ...]:
    """A collated `Batch` as the tensors the first stage takes."""
    mask = batch.attention_mask
    segments = mask.segment_ids if mask.segment_ids is not None else torch.zeros_like(batch.tokens)
    return batch.tokens, batch.position_ids, mask.context.long(), segments


class EmbeddingPipe(nn.Module, EmbeddingGradientShrink):
    """The tied embedding at both ends: token ids in, hidden states out (first stage); hidden
    states in, this rank's vocabulary slice of the logits out (last stage). One module that
    dispatches on its input, because DeepSpeed does not save a tied layer's `forward_fn`."""

    def __init__(self, config: GLMConfig):
        super().__init__()
        self.config = config
        self.shrink_alpha = config.shrink_embedding_gradient_alpha
        self.word_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size,
                                                      init_method=normal(config.init_method_std))

    def forward(self, inputs):
        if isinstance(inputs, torch.Tensor):
            return tied_logits(self.word_embeddings, inputs, self.config, self.training,
                               parallel_output=True, shrink_alpha=self.shrink_alpha)
        tokens, position_ids, context, segment_ids = inputs
        h = embed(self.word_embeddings, tokens, self.config, self.training, self.shrink_alpha)
        return h, position_ids, context, segment_ids


class TransformerLayerPipe(GLMBlock):
    """A GLM block taking and giving the pipeline's tuple. (The class name matches the
    reference's partition method 'type:transformer|embedding'.)"""

    def __init__(self, config: GLMConfig, layer_id: int):
        super().__init__(config, layer_id)
        self.impl = config.attention_impl
        self.rotary = RotaryEmbedding(config.head_dim, fp16_tables=config.rotary_fp16_tables)

    def forward(self, inputs):
        h, position_ids, context, segment_ids = inputs
        blocked = AttentionMask(context.bool(), segment_ids).dense()
        mask = attention_mask_for(self.impl, blocked, h.dtype)
        h = super().forward(h, self.rotary(position_ids), mask)
        return h, position_ids, context, segment_ids


class FinalLayerNormPipe(nn.LayerNorm):
    def forward(self, inputs):
        return super().forward(inputs[0])


def build_pipeline(config: GLMConfig, topology, loss_fn, partition_method: str,
                   recompute_activations: bool, recompute) -> PipelineModule:
    embedding = TiedLayerSpec("embed", EmbeddingPipe, config,
                              tied_weight_attr="word_embeddings.weight")
    specs = [embedding]
    specs += [LayerSpec(TransformerLayerPipe, config, i) for i in range(config.num_layers)]
    specs += [LayerSpec(FinalLayerNormPipe, config.hidden_size, eps=config.layernorm_epsilon),
              embedding]
    return PipelineModule(layers=specs, loss_fn=loss_fn, topology=topology,
                          partition_method=partition_method,
                          activation_checkpoint_interval=1 if recompute_activations else 0,
                          activation_checkpoint_func=recompute,
                          checkpointable_layers=["TransformerLayerPipe"])
