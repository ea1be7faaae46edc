"""Tokenize jsonl or plain-text files into memory-mapped token files (`glm130b.data.indexed`).

    python -m glm130b.data.preprocess --input corpus.jsonl --output-prefix data/corpus \\
        --tokenizer-type sentencepiece --tokenizer-model tok.model --workers 4

Every non-empty line is one document: in .json/.jsonl files a JSON object whose `--json-keys`
hold strings, in any other file the line itself. With one key (the default, "text") the output
is PREFIX.bin/.idx and each document ends with the tokenizer's `eod`. Several keys are the
fields of one record (instruction data: `--json-keys input target`): each key gets its own
PREFIX.KEY.bin/.idx, aligned record by record, nothing appended.

A bad line (not UTF-8, not JSON, a key missing or not a string) is reported as FILE:LINE,
counted, and left out of every output; `--strict` stops at the first one instead. Worker
processes tokenize chunks of lines and the results are written in input order, so the output
does not depend on the number of workers. Outputs appear only when the run finishes.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glm130b.errors import BadLine, UsageError
from glm130b.data.indexed import TokenFileWriter, dtype_for
from glm130b.tokenization import add_tokenizer_args, get_tokenizer

CHUNK_LINES = 512
REPORTED_BAD_LINES = 20  # listed one by one; the rest only counted


def parse_line(raw: bytes, as_json: bool, keys: list[str]) -> list[str] | None:
    """The texts of one line, one per key; None for a blank line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadLine(f"not UTF-8 (byte {e.start})") from None
    if not line.strip():
        return None
    if not as_json:
        return [line.rstrip("\r\n")]
    try:
        record = json.loads(line)
    except ValueError:
        raise BadLine("not JSON") from None
    if not isinstance(record, dict):
        raise BadLine("not a JSON object")
    for key in keys:
        if not isinstance(record.get(key), str):
            raise BadLine(f"no string under key {key!r}")
    return [record[key] for key in keys]


@dataclass
class EncodedChunk:
    flats: list[np.ndarray]    # per key: the chunk's documents end to end
    lengths: list[list[int]]   # per key: document lengths
    bad: list[BadLine] = field(default_factory=list)

    @property
    def documents(self) -> int:
        return len(self.lengths[0])

    @property
    def tokens(self) -> int:
        return sum(len(f) for f in self.flats)


class Encoder:
    """Lines -> token arrays, in whichever process runs it (the tokenizer is loaded once)."""

    def __init__(self, tokenizer_type: str, tokenizer_model: str | None, keys: list[str]):
        self.tokenizer = get_tokenizer(tokenizer_type, tokenizer_model)
        self.keys = keys
        self.eod = [self.tokenizer.get_command("eod")] if len(keys) == 1 else []
        self.dtype = dtype_for(self.tokenizer.num_tokens)

    def __call__(self, job: tuple[str, list[tuple[int, bytes]]]) -> EncodedChunk:
        path, lines = job
        as_json = Path(path).suffix in (".json", ".jsonl")
        ids = [[] for _ in self.keys]
        bad = []
        for number, raw in lines:
            try:
                texts = parse_line(raw, as_json, self.keys)
            except BadLine as e:
                bad.append(BadLine(e.reason, f"{path}:{number}"))
                continue
            if texts is not None:
                for out, text in zip(ids, texts):
                    out.append(self.tokenizer.tokenize(text) + self.eod)
        flats = [np.fromiter(itertools.chain.from_iterable(docs), self.dtype,
                             count=sum(map(len, docs))) for docs in ids]
        return EncodedChunk(flats, [[len(d) for d in docs] for docs in ids], bad)


_worker_encoder: Encoder | None = None


def _init_worker(*args) -> None:
    global _worker_encoder
    _worker_encoder = Encoder(*args)


def _encode_in_worker(job):
    return _worker_encoder(job)


def read_chunks(paths, size: int = CHUNK_LINES):
    """(path, [(line number, raw bytes), ...]) in file order; bytes, so that a line that is not
    UTF-8 is reported by the worker instead of stopping the reader."""
    for path in paths:
        with open(path, "rb") as f:
            chunk = []
            for number, raw in enumerate(f, 1):
                chunk.append((number, raw))
                if len(chunk) == size:
                    yield str(path), chunk
                    chunk = []
            if chunk:
                yield str(path), chunk


def _in_order(pool, jobs, window: int):
    """pool.imap, but reading ahead only `window` chunks (imap would read the whole corpus
    into memory when the workers fall behind)."""
    pending = deque()
    for job in jobs:
        pending.append(pool.apply_async(_encode_in_worker, (job,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


@dataclass
class Summary:
    outputs: list[str]
    documents: int = 0
    tokens: int = 0
    bad: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0
    dtype: str = ""


def output_prefixes(prefix: str, keys: list[str]) -> list[str]:
    return [prefix] if len(keys) == 1 else [f"{prefix}.{key}" for key in keys]


def preprocess(inputs, output_prefix: str, tokenizer_type: str, tokenizer_model: str | None,
               json_keys=("text",), workers: int = 1, strict: bool = False,
               progress: bool = True) -> Summary:
    keys = list(json_keys)
    for path in map(Path, inputs):
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        if len(keys) > 1 and path.suffix not in (".json", ".jsonl"):
            raise ValueError(f"{path}: several --json-keys need .json/.jsonl inputs")
    encoder_args = (tokenizer_type, tokenizer_model, keys)
    encoder = Encoder(*encoder_args)  # fails here, once, on a bad tokenizer
    summary = Summary(output_prefixes(output_prefix, keys), dtype=encoder.dtype.name)
    start = time.perf_counter()
    bar = tqdm(desc="tokenizing", unit=" docs", disable=not progress, mininterval=0.5)
    with contextlib.ExitStack() as stack:
        writers = [stack.enter_context(TokenFileWriter(p, encoder.tokenizer.num_tokens))
                   for p in summary.outputs]
        stack.callback(bar.close)
        if workers > 1:
            pool = multiprocessing.Pool(workers, _init_worker, encoder_args)
            # close + join, not the context manager's terminate: terminating while the pool's
            # feeder thread is blocked sending a chunk to a killed worker never returns. The
            # read-ahead window bounds what the workers still have to finish.
            stack.callback(pool.join)
            stack.callback(pool.close)
            chunks = _in_order(pool, read_chunks(inputs), window=4 * workers)
        else:
            chunks = map(encoder, read_chunks(inputs))
        for chunk in chunks:
            if chunk.bad and strict:
                raise chunk.bad[0]
            for bad in chunk.bad:
                if len(summary.bad) < REPORTED_BAD_LINES:
                    bar.write(f"warning: skipped bad line {bad}", file=sys.stderr)
                summary.bad.append(bad)
            for writer, flat, lengths in zip(writers, chunk.flats, chunk.lengths):
                writer.add_many(flat, lengths)
            summary.documents += chunk.documents
            summary.tokens += chunk.tokens
            bar.update(chunk.documents)
            rate = summary.tokens / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} tokens/s, {len(summary.bad)} bad", refresh=False)
    summary.seconds = time.perf_counter() - start
    return summary


def main(argv=None) -> int:

    p = argparse.ArgumentParser(prog="python -m glm130b.data.preprocess",
                                description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, metavar="FILE",
                   help=".json/.jsonl: JSON lines; other files: one document per line")
    p.add_argument("--output-prefix", required=True, metavar="PREFIX",
                   help="writes PREFIX.bin/.idx (PREFIX.KEY.bin/.idx for several keys)")
    p.add_argument("--json-keys", nargs="+", default=["text"], metavar="KEY",
                   help="the text of each JSON line; several for records (input target)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                   help="tokenizing processes (default: the usable CPU cores)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line")
    add_tokenizer_args(p)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be >= 1")
    try:
        s = preprocess(args.input, args.output_prefix, args.tokenizer_type, args.tokenizer_model,
                       args.json_keys, args.workers, args.strict)
    except BadLine as e:
        raise UsageError(f"bad line {e} (--strict: nothing written)") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    files = ", ".join(f"{o}.bin/.idx" for o in s.outputs)
    seconds = max(s.seconds, 1e-9)
    print(f"wrote {files}: {s.documents:,} documents, {s.tokens:,} tokens ({s.dtype}) in "
          f"{s.seconds:.1f} s ({s.documents / seconds:,.0f} docs/s, "
          f"{s.tokens / seconds:,.0f} tokens/s)")
    if s.bad:
        more = len(s.bad) - REPORTED_BAD_LINES
        print(f"skipped {len(s.bad)} bad line(s), first at {s.bad[0].where}"
              + (f"; {more} not listed above" if more > 0 else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    from glm130b.cli import run
    run(main)
