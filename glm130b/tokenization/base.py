"""The tokenizer interface that the rest of the package uses (reference §3.2).

Every tokenizer has a text vocabulary followed by GLM's 8 special tokens, in the reference's
order, so the model sees ids `num_text_tokens + 0 .. num_text_tokens + 7` for them.
"""
from __future__ import annotations

import abc
import codecs
from typing import Iterable, Optional

SPECIAL_TOKENS = ("[MASK]", "[gMASK]", "[sMASK]", "eod", "sop", "eop", "ENC", "dBLOCK")
# Pre-training named the mask tokens without brackets; accept both spellings.
_ALIASES = {"MASK": "[MASK]", "gMASK": "[gMASK]", "sMASK": "[sMASK]"}
# The characters whose tokens end a sentence for [sMASK] (SAT's `sentence_end_decoder`).
SENTENCE_END_CHARS = (".", "？", "！", "；", ":", "。", "…")


class GLMTokenizer(abc.ABC):
    """Text <-> ids plus the special tokens by name.

    Subclasses supply `_encode_text` / `_decode_text` for plain text; everything that involves
    the special tokens lives here so that all tokenizers render and split them the same way.
    """

    def __init__(self, num_text_tokens: int, eos_id: int, pad_id: int,
                 sentence_end_ids: Iterable[int], pad_is_reserved: bool):
        self._num_text_tokens = num_text_tokens
        self._commands = {name: num_text_tokens + i for i, name in enumerate(SPECIAL_TOKENS)}
        self._commands["eos"] = eos_id
        self._commands["pad"] = pad_id
        self._sentence_end_ids = frozenset(sentence_end_ids)
        # detokenize splits at these ids; the reference's decoder table includes eos as `</s>`.
        self._rendered = {i: name if name.startswith("[") else f"[{name}]"
                          for i, name in enumerate(SPECIAL_TOKENS, num_text_tokens)}
        self._rendered[eos_id] = "[</s>]"
        # A pad id that no text encodes to (icetk's 0, a `<pad>` piece) would decode to garbage
        # or nothing; when pad shares an id with text (e.g. `<unk>`) it must decode as text.
        if pad_is_reserved:
            self._rendered[pad_id] = "[pad]"

    @abc.abstractmethod
    def _encode_text(self, text: str) -> list[int]:
        """Ids of plain text (no special tokens)."""

    @abc.abstractmethod
    def _decode_text(self, ids: list[int]) -> str:
        """Text of a run of text ids."""

    def _byte(self, i: int) -> Optional[int]:
        """The byte a byte-fallback piece (`<0xE5>`) stands for; None for any other id."""
        return None

    @property
    def num_text_tokens(self) -> int:
        """Ids below this are text; the special tokens start here."""
        return self._num_text_tokens

    @property
    def num_tokens(self) -> int:
        return self._num_text_tokens + len(SPECIAL_TOKENS)

    @property
    def sentence_end_ids(self) -> frozenset[int]:
        return self._sentence_end_ids

    def tokenize(self, text: str) -> list[int]:
        return self._encode_text(text)

    def encode(self, text: str) -> list[int]:
        return self._encode_text(text)

    def detokenize(self, ids) -> str:
        """Text with the special tokens written as `[name]`, as the reference prints outputs."""
        parts, run = [], []
        for i in _int_list(ids):
            if i in self._rendered:
                parts.append(self._decode_text(run))
                parts.append(self._rendered[i])
                run = []
            else:
                run.append(i)
        parts.append(self._decode_text(run))
        return "".join(parts)

    def decode(self, ids) -> str:
        """Text only: special tokens, eos and pad are dropped."""
        return self._decode_text([i for i in _int_list(ids) if i not in self._rendered])

    def incomplete_tail(self, ids) -> int:
        """How many of the last ids are byte pieces that begin a UTF-8 character whose other
        bytes have not come (yet): a fill may stop, or be read, after the first of a CJK
        character's 3 byte pieces. Bytes that no continuation can make valid are not counted:
        they decode to U+FFFD, as SentencePiece decodes them."""
        tail = []
        for i in reversed(_int_list(ids)[-4:]):  # a character has at most 4 bytes
            byte = self._byte(i)
            if byte is None:
                break
            tail.append(byte)
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        decoder.decode(bytes(reversed(tail)))
        return len(decoder.getstate()[0])

    def get_command(self, name: str) -> int:
        key = _ALIASES.get(name, name)
        if key not in self._commands:
            valid = ", ".join(list(self._commands) + list(_ALIASES))
            raise KeyError(f"unknown special token {name!r}; valid names: {valid}")
        return self._commands[key]


def _int_list(ids) -> list[int]:
    # Accepts lists, tuples, numpy arrays and 1-D tensors alike.
    return [int(i) for i in ids]
