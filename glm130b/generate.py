"""Fill [MASK], [sMASK] and [gMASK] blanks from the command line (reference §6).

    python -m glm130b.generate $MODEL_ARGS --input-source interactive
    python -m glm130b.generate $MODEL_ARGS --input-source prompts.txt --output-path samples

Under `torchrun --nproc_per_node N ... --model-parallel-size N` every rank decodes with the same
seed; rank 0 reads the input and sends it to the others, and writes the outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, fields
from datetime import datetime
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from .cli import run
from .errors import PromptError, UsageError
from .files import atomic_write_text
from .generation import SamplingConfig, build_prompt, build_strategy, fill_blanks
from .initialize import add_initialization_args, initialize_model_and_tokenizer
from .parallel import (broadcast_object, get_data_parallel_rank, get_data_parallel_world_size,
                       get_tensor_model_parallel_rank, is_rank0)

PROMPT = "\nPlease Input Query (stop to exit) >>> "


def add_generation_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The reference's generation arguments, with its defaults (scripts/generate.sh sets the
    recommended values)."""
    g = parser.add_argument_group("generation")
    g.add_argument("--sampling-strategy", default="BaseStrategy",
                   choices=("BaseStrategy", "BeamSearchStrategy"))
    g.add_argument("--out-seq-length", type=int, default=256,
                   help="maximum total length: prompt and generated tokens")
    g.add_argument("--min-gen-length", type=int, default=0, help="beam search only")
    g.add_argument("--num-beams", type=int, default=1)
    g.add_argument("--length-penalty", type=float, default=0.0)
    g.add_argument("--no-repeat-ngram-size", type=int, default=0)
    g.add_argument("--print-all-beams", action="store_true")
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top_k", type=int, default=0)
    g.add_argument("--top_p", type=float, default=0.0)
    g.add_argument("--input-source", default="interactive",
                   help="'interactive' or a file with one prompt per line")
    g.add_argument("--output-path", default="./samples")
    g.add_argument("--with-id", action="store_true", help="input lines are 'id<TAB>prompt'")
    g.add_argument("--max-inference-batch-size", type=int, default=12,
                   help="prompts of a file decoded together")
    # Accepted so that the reference's command lines run unchanged.
    g.add_argument("--mode", choices=("inference",), default="inference", help=argparse.SUPPRESS)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.temperature <= 0:
        parser.error("--temperature must be positive (use --top_k 1 for greedy decoding)")
    if not 0.0 <= args.top_p <= 1.0:
        parser.error("--top_p must lie in [0, 1]")
    for name in ("num_beams", "out_seq_length", "max_inference_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


class Query:
    """One input line: its id (with --with-id) and its prompt."""

    def __init__(self, line: str, args, tokenizer, max_sequence_length: int, where: str):
        self.id = None
        if args.with_id:
            if "\t" not in line:
                raise PromptError(f"{where}: --with-id expects 'id<TAB>prompt'")
            self.id, line = line.split("\t", 1)
        self.text = line
        try:
            self.prompt = build_prompt(line, tokenizer, max_sequence_length, args.out_seq_length)
        except PromptError as e:
            raise PromptError(f"{where}: {e}") from None


def output_file(folder: Path, query: Query) -> Path:
    """<id>.txt, or the reference's <first 20 characters>-<MM-DD-HH-MM-SS>.txt; a number is
    added when that name is taken, so that every prompt keeps its own file."""
    if query.id is not None:
        return folder / f"{query.id}.txt"
    stem = f"{query.text.replace('/', '')[:20]}-{datetime.now():%m-%d-%H-%M-%S}"
    path, n = folder / f"{stem}.txt", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.txt", n + 1
    return path


def save(folder: Path, query: Query, filled, print_all_beams: bool, echo=print) -> None:
    """Print the styled answer(s) and write one line per answer to the query's file."""
    if print_all_beams and len(filled.styled) > 1:
        for i, styled in enumerate(filled.styled):
            echo(f"Output beam {i}: {styled}")
    else:
        echo(f"Output: {filled.styled[0]}")
    path = output_file(folder, query)
    atomic_write_text(path, "".join(answer + "\n" for answer in filled.answers))


class Streamer:
    """Prints each blank's text as its tokens come (sampling: one sequence per prompt)."""

    def __init__(self, tokenizer, end_tokens):
        self.tokenizer, self.end_tokens = tokenizer, set(end_tokens)
        self.blank, self.text, self.shown = None, "", ""

    def __call__(self, prompt: int, blank: int, ids: list[int]) -> None:
        if blank != self.blank:
            self.flush()
            print("\nGenerating: " if self.blank is None else "\n            ", end="")
            self.blank, self.shown = blank, ""
        self.text = self.tokenizer.detokenize([i for i in ids if i not in self.end_tokens])
        # Hold back a trailing partial character (a byte-fallback piece still incomplete).
        self._show(self.text.rstrip("\ufffd"))

    def _show(self, text: str) -> None:
        if text.startswith(self.shown):
            print(text[len(self.shown):], end="", flush=True)
            self.shown = text

    def flush(self) -> None:
        if self.blank is not None:
            self._show(self.text)

    def close(self) -> None:
        if self.blank is not None:
            self.flush()
            print()


def read_query() -> Optional[str]:
    """The next non-empty line from the user; None for `stop` or end of input."""
    while True:
        try:
            line = input(PROMPT).strip()
        except EOFError:
            return None
        if line == "stop":
            return None
        if line:
            return line
        print("Query should not be empty!")


def interactive(args, model, tokenizer, strategy, max_sequence_length: int) -> None:
    folder = Path(args.output_path)
    while True:
        line = broadcast_object(read_query() if is_rank0() else None)
        if line is None:
            return
        try:
            query = Query(line, args, tokenizer, max_sequence_length, "input")
        except PromptError as e:
            if is_rank0():
                print(f"error: {e}")
            continue
        start = time.perf_counter()
        if is_rank0():
            print(f"\nInput: {query.prompt.text}")
        streamer = Streamer(tokenizer, strategy.end_tokens) if is_rank0() else None
        filled = fill_blanks(model, tokenizer, [query.prompt], strategy, args.out_seq_length,
                             on_token=streamer)
        if is_rank0():
            streamer.close()
            save(folder, query, filled[0], args.print_all_beams)
            print(f"\nTaken time {time.perf_counter() - start:.2f} s", flush=True)


def read_prompt_lines(path: str):
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return UsageError(f"cannot read --input-source {path}: {e}")


def from_file(args, model, tokenizer, strategy, max_sequence_length: int) -> None:
    """Every prompt is checked before any is decoded; the data-parallel groups share the
    prompts round-robin, each group decoding batches of --max-inference-batch-size."""
    lines = broadcast_object(read_prompt_lines(args.input_source) if is_rank0() else None)
    if isinstance(lines, Exception):
        raise lines
    queries = [Query(line.strip(), args, tokenizer, max_sequence_length,
                     f"{args.input_source}:{n}")
               for n, line in enumerate(lines, 1) if line.strip()]
    mine = queries[get_data_parallel_rank()::get_data_parallel_world_size()]
    writer = get_tensor_model_parallel_rank() == 0
    folder = Path(args.output_path)
    size = args.max_inference_batch_size
    with tqdm(total=len(mine), unit="prompt", disable=not writer, file=sys.stderr) as bar:
        for start in range(0, len(mine), size):
            batch = mine[start:start + size]
            filled = fill_blanks(model, tokenizer, [q.prompt for q in batch], strategy,
                                 args.out_seq_length)
            if writer:
                for query, result in zip(batch, filled):
                    save(folder, query, result, args.print_all_beams, echo=tqdm.write)
            bar.update(len(batch))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_initialization_args(parser)
    add_generation_args(parser)
    args = parser.parse_args(argv)
    check_args(parser, args)
    model, tokenizer = initialize_model_and_tokenizer(args)
    if not args.load and is_rank0():
        print("warning: no --load, generating from randomly initialised weights",
              file=sys.stderr)
    sampling = SamplingConfig(**{f.name: getattr(args, f.name) for f in fields(SamplingConfig)})
    strategy = build_strategy(tokenizer, model.config.vocab_size, **asdict(sampling))
    if get_tensor_model_parallel_rank() == 0:
        os.makedirs(args.output_path, exist_ok=True)
    source = interactive if args.input_source == "interactive" else from_file
    try:
        source(args, model, tokenizer, strategy, model.config.max_sequence_length)
    except PromptError as e:
        if is_rank0():
            print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run(main)
