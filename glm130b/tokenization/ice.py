"""GLM-130B's tokenizer: icetk's `ice_text.model` under SAT's `icetk-glm-130B` wrapper
(reference §3).

icetk is not a dependency: its text side is one SentencePiece model plus an id offset, which is
all this reproduces. Ids: text = piece id + 20000; [MASK]..dBLOCK = 150000..150007;
eos = 20002 (`</s>`); pad = 0 (an image-token id that text never produces).
"""
from __future__ import annotations

import os
from pathlib import Path

from glm130b.tokenization.sentencepiece_tokenizer import (SentencePieceBacked, SentencePieceText,
                                                               require_file)

TEXT_OFFSET = 20000  # icetk's image tokens occupy 0..19999
SPECIAL_BASE = 150000  # SAT's num_tokens: the specials follow icetk's whole id space
EOS_ID = 20002
PAD_ID = 0


def default_model_path() -> Path:
    env = os.environ.get("ICETK_MODEL_PATH")
    return Path(env) if env else Path.home() / ".icetk_models" / "ice_text.model"


class IceTokenizer(SentencePieceBacked):
    """`ignore_linebreak=True` (the reference's default) lets SentencePiece normalise `\\n` away;
    False encodes it as the `<n>` piece (20004 in the released model)."""

    def __init__(self, path: str | os.PathLike | None = None, ignore_linebreak: bool = True):
        path = require_file(path or default_model_path(),
                            "icetk downloads ice_text.model to ~/.icetk_models/; copy it there, "
                            "set ICETK_MODEL_PATH, or pass --tokenizer-model PATH")
        self.text = SentencePieceText(path, offset=TEXT_OFFSET, ignore_linebreak=ignore_linebreak)
        if TEXT_OFFSET + self.text.size > SPECIAL_BASE:
            raise ValueError(f"{path} has {self.text.size} pieces; an icetk text model has at "
                             f"most {SPECIAL_BASE - TEXT_OFFSET}")
        super().__init__(num_text_tokens=SPECIAL_BASE, eos_id=EOS_ID, pad_id=PAD_ID,
                         sentence_end_ids=self.text.sentence_end_ids(), pad_is_reserved=True)
