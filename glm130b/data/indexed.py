"""Memory-mapped token files: `PREFIX.bin` holds every document's tokens end to end, `PREFIX.idx`
says where each document starts.

    .idx  magic b"GLMTOKS\\0" | version u32 | dtype code u32 | documents u64 | tokens u64
          | offsets i64[documents + 1]      (token offsets into .bin; offsets[0] = 0)
    .bin  tokens, uint16 when the vocabulary fits (< 65500 ids), else int32

Reading maps the files and touches only the tokens asked for, so a corpus of any size opens
instantly. The writer fills temporary files and renames them into place only when closed
without error (the .idx last, after removing the old one): an interrupted run leaves no pair
that a reader would take for whole, and a reader checks that the pair agrees before use.
"""
from __future__ import annotations

import os
import struct
from array import array
from pathlib import Path

import numpy as np

from glm130b.errors import TokenFileError

MAGIC = b"GLMTOKS\0"
VERSION = 1
_HEADER = struct.Struct("<8sIIQQ")
_DTYPES = {1: np.dtype(np.uint16), 2: np.dtype(np.int32)}
# A little below 2**16, so ids near the top (specials added later, padding) still fit.
UINT16_LIMIT = 65500


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size < UINT16_LIMIT else np.dtype(np.int32)


def _paths(prefix) -> tuple[Path, Path]:
    prefix = str(prefix)
    return Path(prefix + ".bin"), Path(prefix + ".idx")


class TokenFileWriter:
    """Appends documents; `close()` commits, `abort()` (or leaving a `with` by an exception)
    removes every trace of the run.

        with TokenFileWriter("data/corpus", tokenizer.num_tokens) as out:
            out.add(ids)
    """

    def __init__(self, prefix, vocab_size: int):
        self.bin_path, self.idx_path = _paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype_for(vocab_size)
        self._bin_tmp = self.bin_path.with_name(self.bin_path.name + ".tmp")
        self._idx_tmp = self.idx_path.with_name(self.idx_path.name + ".tmp")
        self._file = open(self._bin_tmp, "wb")
        self._offsets = array("q", [0])

    @property
    def num_documents(self) -> int:
        return len(self._offsets) - 1

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def add(self, tokens) -> None:
        self.add_many(np.asarray(tokens), [len(tokens)])

    def add_many(self, flat: np.ndarray, lengths) -> None:
        """Documents given as one flat array and their lengths (what the workers send)."""
        flat = np.asarray(flat)
        if flat.size and (flat.min() < 0 or flat.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token ids {flat.min()}..{flat.max()} do not fit {self.dtype}")
        self._file.write(flat.astype(self.dtype, copy=False).tobytes())
        end = self._offsets[-1]
        for n in lengths:
            end += int(n)
            self._offsets.append(end)
        if end != self._file.tell() // self.dtype.itemsize:
            raise ValueError("document lengths do not add up to the tokens written")

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        code = next(c for c, d in _DTYPES.items() if d == self.dtype)
        with open(self._idx_tmp, "wb") as f:
            f.write(_HEADER.pack(MAGIC, VERSION, code, self.num_documents, self.num_tokens))
            f.write(np.frombuffer(self._offsets, dtype=np.int64).tobytes())
            f.flush()
            os.fsync(f.fileno())
        self.idx_path.unlink(missing_ok=True)
        os.replace(self._bin_tmp, self.bin_path)
        os.replace(self._idx_tmp, self.idx_path)

    def abort(self) -> None:
        self._file.close()
        self._bin_tmp.unlink(missing_ok=True)
        self._idx_tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class IndexedDataset:
    """Documents of a .bin/.idx pair: `ds[i]` is document i as a read-only array view."""

    def __init__(self, prefix):
        self.prefix = str(prefix)
        bin_path, idx_path = _paths(prefix)
        for path in (idx_path, bin_path):
            if not path.is_file():
                raise TokenFileError(f"token file not found: {path} (make it with "
                                     "`python -m glm130b.data.preprocess`)")
        raw = idx_path.read_bytes()
        if len(raw) < _HEADER.size or raw[:8] != MAGIC:
            raise TokenFileError(f"{idx_path} is not a glm130b token index (bad magic header)")
        _, version, code, docs, tokens = _HEADER.unpack_from(raw)
        if version != VERSION:
            raise TokenFileError(f"{idx_path} has format version {version}; this code reads "
                                 f"version {VERSION}")
        if code not in _DTYPES:
            raise TokenFileError(f"{idx_path} names an unknown token dtype code {code}")
        if len(raw) != _HEADER.size + 8 * (docs + 1):
            raise TokenFileError(f"{idx_path} is truncated or padded: {len(raw)} bytes for "
                                 f"{docs} documents")
        self.dtype = _DTYPES[code]
        self.offsets = np.frombuffer(raw, dtype=np.int64, offset=_HEADER.size)
        if self.offsets[0] != 0 or self.offsets[-1] != tokens or np.any(np.diff(self.offsets) < 0):
            raise TokenFileError(f"{idx_path} has inconsistent document offsets")
        expected = tokens * self.dtype.itemsize
        if bin_path.stat().st_size != expected:
            raise TokenFileError(f"{bin_path} holds {bin_path.stat().st_size} bytes, its index "
                                 f"expects {expected}: truncated, or not the pair of {idx_path}")
        # np.memmap refuses an empty file; an empty corpus is still a valid one.
        self.tokens = (np.memmap(bin_path, dtype=self.dtype, mode="r") if tokens
                       else np.zeros(0, dtype=self.dtype))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents")
        i %= len(self)
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def document_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def token_range(self, start: int, end: int) -> np.ndarray:
        return self.tokens[start:end]


class DocumentSubset:
    """Some documents of an `IndexedDataset`, in their order, read as if they were the corpus
    (`num_tokens`, `token_range` over their concatenation): one part of a train/valid/test
    split, where a document goes wholly to one part."""

    def __init__(self, dataset: IndexedDataset, documents):
        self.dataset = dataset
        self.documents = np.asarray(documents, dtype=np.int64)
        lengths = dataset.document_lengths[self.documents]
        self.offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.documents)

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def token_range(self, start: int, end: int) -> np.ndarray:
        first = int(np.searchsorted(self.offsets, start, side="right")) - 1
        pieces, at, doc = [], start, first
        while at < end and doc < len(self.documents):
            base = self.dataset.offsets[self.documents[doc]] - self.offsets[doc]
            stop = min(end, int(self.offsets[doc + 1]))
            pieces.append(self.dataset.tokens[base + at:base + stop])
            at, doc = stop, doc + 1
        return np.concatenate(pieces) if pieces else self.dataset.tokens[0:0]


class TokenSamples:
    """Fixed-length samples cut one after another out of the concatenated documents, as the
    reference's pretraining reads them (`length_per_sample` 2000); a tail shorter than one
    sample is left out. Sample i is tokens [i·length, (i+1)·length), as int64."""

    def __init__(self, dataset: IndexedDataset | DocumentSubset, length: int):
        if length < 1:
            raise ValueError(f"sample length must be >= 1, got {length}")
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.dataset.num_tokens // self.length

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        start = i * self.length
        return self.dataset.token_range(start, start + self.length).astype(np.int64)
