"""Train a SentencePiece model for `--tokenizer-type sentencepiece`.

    python -m glm130b.tokenization.train --input corpus.txt --output-prefix out/tok

The first ids follow icetk's text model: <unk>=0, <s>=1, </s>=2, <pad>=3 and <n>=4, a
user-defined piece so that newlines can be kept with `ignore_linebreak=False`. Byte fallback
lets characters unseen in training still encode; the vocabulary size is a soft limit so that a
small corpus still trains. Inputs are text (one sentence or more per line) or JSON lines.

Normalisation only turns whitespace (newlines included) into spaces. SentencePiece's default
NFKC rule would also rewrite full-width Chinese punctuation (，？！；…) as ASCII, so Chinese
would not survive a round trip and the sentence-end pieces that [sMASK] needs would not exist;
icetk's model keeps them (？ is 20031) while still dropping newlines.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import sentencepiece as spm

from glm130b.tokenization.sentencepiece_tokenizer import NEWLINE_PIECE

# Tab, line feed, vertical tab, form feed, carriage return, next line, no-break space and
# ideographic space.
_WHITESPACE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0xA0, 0x3000)


def read_texts(inputs, json_key: str | None = None) -> list[str]:
    """Non-empty lines of the inputs; `.json`/`.jsonl` files (or all files, when `json_key` is
    given) are JSON lines whose `json_key` (default "text") holds the text."""
    lines = []
    for path in map(Path, inputs):
        as_json = json_key is not None or path.suffix in (".json", ".jsonl")
        key = json_key or "text"
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if as_json and line.strip():
                    line = _json_text(line, key, f"{path}:{n}")
                lines.extend(part for part in line.split("\n") if part.strip())
    return lines


def _json_text(line: str, key: str, where: str) -> str:
    try:
        text = json.loads(line)[key]
    except (ValueError, KeyError, TypeError):
        text = None
    if not isinstance(text, str):
        raise ValueError(f"{where}: not a JSON object with a {key!r} string")
    return text


def train_tokenizer(inputs, output_prefix: str | os.PathLike, vocab_size: int = 4000,
                    model_type: str = "unigram", character_coverage: float = 0.9995,
                    json_key: str | None = None, max_piece_length: int = 16) -> Path:
    """Train on `inputs` and write `<output_prefix>.model` / `.vocab`; returns the .model path."""
    for path in map(Path, inputs):
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
    # SentencePiece keeps the whole corpus in memory anyway; reading it here first turns bad
    # input into a clear error instead of an exception from inside the trainer.
    lines = read_texts(inputs, json_key)
    if not lines:
        raise ValueError(f"no text in {', '.join(map(str, inputs))}")
    prefix = Path(output_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # The rule is compiled into the model, so the file is only needed while training.
        rule = Path(tmp) / "whitespace.tsv"
        rule.write_text("".join(f"{c:X}\t20\n" for c in _WHITESPACE))
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=vocab_size,
            model_type=model_type, character_coverage=character_coverage,
            normalization_rule_tsv=str(rule), byte_fallback=True, hard_vocab_limit=False,
            max_sentencepiece_length=max_piece_length, add_dummy_prefix=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=3,
            user_defined_symbols=[NEWLINE_PIECE], num_threads=os.cpu_count() or 1,
            minloglevel=1)
    return prefix.with_name(prefix.name + ".model")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glm130b.tokenization.train",
                                     description="Train a SentencePiece tokenizer.")
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE")
    parser.add_argument("--output-prefix", required=True, metavar="PREFIX")
    parser.add_argument("--vocab-size", type=int, default=4000)
    parser.add_argument("--model-type", choices=("bpe", "unigram"), default="unigram")
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--max-piece-length", type=int, default=16,
                        help="longest piece in characters; a small corpus of repeated Chinese "
                             "sentences otherwise learns whole sentences as pieces")
    parser.add_argument("--json-key", default=None,
                        help="read every input as JSON lines and take this key "
                             "(.json/.jsonl inputs are read so anyway, with key 'text')")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        path = train_tokenizer(args.input, args.output_prefix, args.vocab_size, args.model_type,
                               args.character_coverage, args.json_key, args.max_piece_length)
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: SentencePiece's checks
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    pieces = spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
    print(f"trained {args.model_type} tokenizer: {pieces} pieces (asked {args.vocab_size}) "
          f"from {len(args.input)} file(s) in {time.perf_counter() - start:.2f}s -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
