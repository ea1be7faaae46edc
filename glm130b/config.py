"""Model hyper-parameters, under the reference's argument names.

`GLMConfig` is what the model is built from; `add_model_args` / `GLMConfig.from_flags` are the
argparse side, so that `configs/model_*.sh` (MODEL_ARGS) carries over from the reference.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Optional

from .errors import UsageError


@dataclass
class GLMConfig:
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    inner_hidden_size: int
    vocab_size: int
    max_sequence_length: int = 2048
    layernorm_epsilon: float = 1e-5
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    init_method_std: float = 0.0052
    # Embedding gradient shrink (reference §1.10): identity in value, the gradient scaled by
    # alpha in training (GLM-130B's 0.1); 1.0 turns it off. Inference never applies it. The
    # model starts from this alpha; a schedule moves it with `set_embedding_gradient_shrink`.
    shrink_embedding_gradient_alpha: float = 0.1
    shrink_logit_embedding_gradient: bool = False
    # The released model built its rotary tables in fp16; fp32 is the exact mathematics.
    rotary_fp16_tables: bool = False
    # "reference": explicit scores, fp32 softmax, -10000 fill. "sdpa": scaled_dot_product_attention.
    attention_impl: str = "reference"

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.attention_impl not in ("reference", "sdpa"):
            raise ValueError("attention_impl must be 'reference' or 'sdpa', "
                             f"not {self.attention_impl!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def deepnorm_alpha(self) -> float:
        return (2 * self.num_layers) ** 0.5

    @property
    def deepnorm_beta(self) -> float:
        return (2 * self.num_layers) ** -0.5

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GLMConfig":
        if name not in PRESETS:
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    @classmethod
    def from_flags(cls, preset: Optional[str] = None, **values) -> "GLMConfig":
        """From `add_model_args`' values: a value of None is not given, and falls back to
        `preset`, then to the field's default."""
        base = cls.from_preset(preset) if preset else None
        given = {k: v for k, v in values.items() if v is not None}
        if base is not None:
            given = {**dataclasses.asdict(base), **given}
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.name not in given and f.default is dataclasses.MISSING]
        if missing:
            flags = ", ".join("--" + m.replace("_", "-") for m in missing)
            raise UsageError(f"missing model arguments {flags} (or give --preset)")
        return cls(**given)


PRESETS = {
    "glm-130b": GLMConfig(num_layers=70, hidden_size=12288, num_attention_heads=96,
                          inner_hidden_size=32768, vocab_size=150528, max_sequence_length=2048),
    # A few million parameters, trained on CPU in minutes by the quickstart; the vocabulary
    # holds a 4000-piece sentencepiece model plus the 8 GLM specials, padded to 4096.
    "glm-tiny": GLMConfig(num_layers=4, hidden_size=256, num_attention_heads=8,
                          inner_hidden_size=682, vocab_size=4096, max_sequence_length=256),
}


def add_model_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Model arguments, as the reference names them. Unset values fall back to --preset."""
    g = parser.add_argument_group("model")
    g.add_argument("--preset", choices=sorted(PRESETS), help="start from a named configuration")
    g.add_argument("--num-layers", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--num-attention-heads", type=int)
    g.add_argument("--inner-hidden-size", type=int)
    g.add_argument("--vocab-size", type=int)
    g.add_argument("--max-sequence-length", type=int)
    g.add_argument("--layernorm-epsilon", type=float)
    g.add_argument("--hidden-dropout", type=float)
    g.add_argument("--attention-dropout", type=float)
    g.add_argument("--init-method-std", type=float)
    g.add_argument("--shrink-embedding-gradient-alpha", type=float)
    g.add_argument("--shrink-logit-embedding-gradient", action="store_true", default=None)
    g.add_argument("--rotary-fp16-tables", action="store_true", default=None,
                   help="build rotary tables in fp16 as the released model's code did")
    g.add_argument("--attention-impl", choices=("reference", "sdpa"))
    # Accepted so the reference's MODEL_ARGS run unchanged; our model is always DeepNorm post-LN.
    g.add_argument("--layernorm-order", choices=("post",), default="post")
    return parser
