"""Tokenizers: icetk's model for GLM-130B itself, and SentencePiece models trained by us.

The trainer (`python -m glm130b.tokenization.train`) is not imported here, so that running it
as a module does not import it twice.
"""
from __future__ import annotations

import argparse

from glm130b.errors import UsageError
from glm130b.tokenization.base import SPECIAL_TOKENS, GLMTokenizer
from glm130b.tokenization.ice import IceTokenizer, default_model_path
from glm130b.tokenization.sentencepiece_tokenizer import SentencePieceTokenizer

__all__ = ["GLMTokenizer", "IceTokenizer", "SentencePieceTokenizer", "SPECIAL_TOKENS",
           "TOKENIZER_TYPES", "get_tokenizer", "add_tokenizer_args", "check_vocab_size",
           "default_model_path"]

# "icetk-glm-130B" is the reference's --tokenizer-type value.
TOKENIZER_TYPES = ("icetk-glm-130B", "sentencepiece")


def get_tokenizer(tokenizer_type: str = "icetk-glm-130B",
                  tokenizer_model: str | None = None) -> GLMTokenizer:
    if tokenizer_type == "icetk-glm-130B":
        return IceTokenizer(tokenizer_model)
    if tokenizer_type == "sentencepiece":
        if tokenizer_model is None:
            raise ValueError("--tokenizer-type sentencepiece needs --tokenizer-model PATH")
        return SentencePieceTokenizer(tokenizer_model)
    raise ValueError(f"unknown tokenizer type {tokenizer_type!r}; "
                     f"choose one of {', '.join(TOKENIZER_TYPES)}")


def check_vocab_size(tokenizer: GLMTokenizer, vocab_size: int) -> None:
    """The model's vocabulary must hold every id the tokenizer gives (it may be larger: the
    rows past the tokenizer's ids only pad it)."""
    if tokenizer.num_tokens > vocab_size:
        raise UsageError(f"the tokenizer has {tokenizer.num_tokens} ids but --vocab-size is "
                         f"{vocab_size}")


def add_tokenizer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", default="icetk-glm-130B", choices=TOKENIZER_TYPES)
    group.add_argument("--tokenizer-model", default=None,
                       help="model file; for icetk-glm-130B defaults to $ICETK_MODEL_PATH or "
                            "~/.icetk_models/ice_text.model")
    return parser
