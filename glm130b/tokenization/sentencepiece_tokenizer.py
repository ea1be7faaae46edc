"""Tokenizers backed by a SentencePiece model: our own models, and the shared mechanics for icetk.

This module shares its name with the `sentencepiece` package; the absolute import below still
finds the package because the directory of this file is never on sys.path (entry points are
run as `python -m glm130b...`).
"""
from __future__ import annotations

import os
from pathlib import Path

import sentencepiece as spm

from glm130b.tokenization.base import SENTENCE_END_CHARS, GLMTokenizer

# icetk's literal newline piece (a user-defined symbol, so it always encodes as one token).
NEWLINE_PIECE = "<n>"
_DUMMY_PREFIX = "\u2581"
_SENTINEL = "a"


def _starts_cjk(text: str) -> bool:
    c = text[:1]
    return bool(c) and ("\u4e00" <= c <= "\u9fff" or "\u3000" <= c <= "\u303f"
                        or "\uff00" <= c <= "\uffef")


def require_file(path: str | os.PathLike, hint: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer model not found: {path}; {hint}")
    return path


class SentencePieceText:
    """Plain text through a SentencePiece model, every id shifted by `offset`.

    icetk shifts by 20000 (ids below are its image tokens); our own models do not shift.
    `ignore_linebreak=True` passes text unchanged, so SentencePiece normalises `\\n` to a space,
    as icetk does by default; False writes each `\\n` as the `<n>` piece.
    """

    def __init__(self, path: Path, offset: int, ignore_linebreak: bool,
                 mark_before_cjk: bool = True):
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        self.offset = offset
        self.ignore_linebreak = ignore_linebreak
        self.mark_before_cjk = mark_before_cjk
        if not ignore_linebreak and self.piece_id(NEWLINE_PIECE) is None:
            raise ValueError(f"{path} has no {NEWLINE_PIECE!r} piece, so newlines cannot be "
                             "kept; use ignore_linebreak=True")

    @property
    def size(self) -> int:
        return self.sp.get_piece_size()

    def piece_id(self, piece: str) -> int | None:
        """Shifted id of `piece`, or None if the model lacks it (SentencePiece answers <unk>)."""
        i = self.sp.piece_to_id(piece)
        return i + self.offset if self.sp.id_to_piece(i) == piece else None

    def byte(self, i: int) -> int | None:
        """The byte of a byte-fallback piece such as `<0xE5>`, or None."""
        local = i - self.offset
        if not 0 <= local < self.size or not self.sp.is_byte(local):
            return None
        return int(self.sp.id_to_piece(local)[3:5], 16)

    def sentence_end_ids(self) -> set[int]:
        # Models differ in whether punctuation carries the dummy-prefix mark; icetk's do not,
        # which yields the reference's {20007, 20031, 20035, 20027, 20012, 83823, 145670}.
        ids = set()
        for char in SENTENCE_END_CHARS:
            for piece in (char, _DUMMY_PREFIX + char):
                i = self.piece_id(piece)
                if i is not None:
                    ids.add(i)
                    break
        return ids

    def encode(self, text: str) -> list[int]:
        if not self.ignore_linebreak:
            text = text.replace("\n", NEWLINE_PIECE)
        if self.mark_before_cjk or not _starts_cjk(text):
            return [i + self.offset for i in self.sp.encode(text)]
        # Chinese runs on without spaces, so a piece of text that starts in Chinese (a choice,
        # a prompt, a blank's fill) tokenizes as it would inside a sentence: the dummy-prefix
        # mark goes to a Latin sentinel, which the script split keeps apart, and is dropped.
        ids = self.sp.encode(_SENTINEL + text)
        head = ""
        while ids and head != _DUMMY_PREFIX + _SENTINEL:
            head += self.sp.id_to_piece(ids.pop(0))
        return [i + self.offset for i in ids]

    def decode(self, ids: list[int]) -> str:
        local = [i - self.offset for i in ids]
        bad = [i for i, j in zip(ids, local) if not 0 <= j < self.size]
        if bad:
            raise ValueError(f"ids {bad[:8]} are not text ids of this tokenizer "
                             f"(text ids are {self.offset}..{self.offset + self.size - 1})")
        # icetk restores newlines whatever ignore_linebreak was at encoding time.
        return self.sp.decode(local).replace(NEWLINE_PIECE, "\n")


class SentencePieceBacked(GLMTokenizer):
    """A tokenizer whose text side is a `SentencePieceText` (`self.text`): ours and icetk's."""
    text: SentencePieceText

    def _encode_text(self, text: str) -> list[int]:
        return self.text.encode(text)

    def _decode_text(self, ids: list[int]) -> str:
        return self.text.decode(ids)

    def _byte(self, i: int) -> int | None:
        return self.text.byte(i)


class SentencePieceTokenizer(SentencePieceBacked):
    """One of our own SentencePiece models (see `glm130b.tokenization.train`).

    Text ids are the model's ids; the 8 special tokens follow at `piece_size + i`;
    eos is the model's `</s>`; pad is its `<pad>` if it has one, else 0.
    """

    def __init__(self, path: str | os.PathLike, ignore_linebreak: bool = True):
        path = require_file(path, "train one with `python -m glm130b.tokenization.train` "
                                  "or pass --tokenizer-model PATH")
        # Our models mark no word boundary before Chinese text (icetk's keep SentencePiece's).
        self.text = SentencePieceText(path, offset=0, ignore_linebreak=ignore_linebreak,
                                      mark_before_cjk=False)
        eos, pad = self.text.sp.eos_id(), self.text.sp.pad_id()
        if eos < 0:
            raise ValueError(f"{path} has no </s> piece; retrain it with an eos id")
        super().__init__(num_text_tokens=self.text.size, eos_id=eos, pad_id=max(pad, 0),
                         sentence_end_ids=self.text.sentence_end_ids(), pad_is_reserved=pad >= 0)
