"""Fill [MASK], [sMASK] and [gMASK] blanks from the command line (reference §6).

    python -m glm130b.generate $MODEL_ARGS --input-source interactive
    python -m glm130b.generate $MODEL_ARGS --input-source prompts.txt --output-path samples

The interactive prompt edits lines with readline where Python has it, with this session's
inputs as history (arrow keys). Blanks are coloured as the reference colours them only on a
terminal (--color auto; NO_COLOR turns it off). A file's progress bar goes to stderr.

Under `torchrun --nproc_per_node N ... --model-parallel-size N` every rank decodes with the same
seed; rank 0 reads the input and sends it to the others, and writes the outputs.

Every line of an input file is checked before the model loads (prompt length, control
characters, ids that could name a file outside --output-path), and each batch's files are
written as soon as it is decoded: a bad line costs no decoding, a failure loses nothing done.
"""
from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from .cli import config_from_args, model_config, require_at_least_one, run
from .config import GLMConfig
from .errors import PromptError, UsageError
from .files import atomic_write_text
from .generation import (Prompt, SamplingConfig, Shown, blank_ids, build_prompt, build_strategy,
                         fill_blanks, settled)
from .initialize import RuntimeConfig, add_initialization_args, initialize_model
from .parallel import (broadcast_object, get_data_parallel_rank, get_data_parallel_world_size,
                       get_tensor_model_parallel_rank, initialize_distributed, is_rank0)
from .tokenization import check_vocab_size, get_tokenizer

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
    g.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="underline and colour the blanks in printed outputs; auto: when stdout "
                        "is a terminal and NO_COLOR is not set")
    # Accepted so that the reference's command lines run unchanged.
    g.add_argument("--mode", choices=("inference",), default="inference", help=argparse.SUPPRESS)
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_initialization_args(parser)
    add_generation_args(parser)
    args = parser.parse_args(argv)
    if args.temperature <= 0:
        parser.error("--temperature must be positive (use --top_k 1 for greedy decoding)")
    if not 0.0 <= args.top_p <= 1.0:
        parser.error("--top_p must lie in [0, 1]")
    require_at_least_one(parser, args, "num_beams", "out_seq_length", "max_inference_batch_size")
    return args


@dataclass
class GenerateConfig:
    """Where prompts come from and answers go, and how long they may be: the flags of
    `add_generation_args` other than the sampling ones, under their names."""
    input_source: str = "interactive"   # or a file with one prompt per line
    output_path: str = "./samples"
    with_id: bool = False               # input lines are 'id<TAB>prompt'
    max_inference_batch_size: int = 12
    out_seq_length: int = 256           # prompt and generated tokens
    print_all_beams: bool = False
    color: str = "auto"                 # or "always", "never"


def use_color(choice: str) -> bool:
    """--color: auto colours a terminal only, unless NO_COLOR is set (no-color.org: to
    anything but the empty string)."""
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def same_terminal(out, err) -> bool:
    """Whether `out` and `err` write to one terminal, where a progress bar on `err` must be
    moved aside for each line on `out`."""
    try:
        return (out.isatty() and err.isatty()
                and os.path.samestat(os.fstat(out.fileno()), os.fstat(err.fileno())))
    except (OSError, ValueError):  # a stream without a file descriptor (io.UnsupportedOperation)
        return False


# Characters that no prompt or id may hold: NUL cannot be in a file name, the other control
# characters hide in a terminal or break the one-prompt-per-line form (tab separates the id),
# and an unpaired surrogate cannot be written as UTF-8.
FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
MAX_NAME_BYTES = 255  # of one file name on common file systems


@dataclass
class Query:
    """One input line (`where` is file:line): its id (with --with-id), text and prompt."""
    text: str
    prompt: Prompt
    where: str
    id: Optional[str] = None


def forbidden(text: str) -> Optional[str]:
    """What is wrong with the first forbidden character of `text`, or None."""
    found = FORBIDDEN.search(text)
    if found is None:
        return None
    code = ord(found.group())
    kind = "an unpaired surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
    return f"U+{code:04X}, {kind}"


def check_id(ident: str, where: str) -> None:
    """An id names a file in --output-path: it may not name anything else."""
    if not ident:
        raise PromptError(f"{where}: empty id before the tab")
    bad = forbidden(ident)
    if bad:
        raise PromptError(f"{where}: the id holds {bad}")
    if "/" in ident or "\\" in ident or ".." in ident:
        raise PromptError(f"{where}: id {ident!r} holds '/', '\\' or '..'; an id names a file "
                          "in --output-path")
    if len(f"{ident}.txt".encode()) > MAX_NAME_BYTES:
        raise PromptError(f"{where}: id of {len(ident.encode())} bytes is too long for a file "
                          f"name ({MAX_NAME_BYTES - 4} at most)")


def parse_query(line: str, config: GenerateConfig, tokenizer, max_sequence_length: int,
                where: str) -> Query:
    ident = None
    if config.with_id:
        if "\t" not in line:
            raise PromptError(f"{where}: --with-id expects 'id<TAB>prompt'")
        ident, line = line.split("\t", 1)
        check_id(ident, where)
    bad = forbidden(line)
    if bad:
        raise PromptError(f"{where}: the prompt holds {bad}; only tab is allowed")
    try:
        prompt = build_prompt(line, tokenizer, max_sequence_length, config.out_seq_length)
    except PromptError as e:
        raise PromptError(f"{where}: {e}") from None
    return Query(line, prompt, where, ident)


def output_file(folder: Path, query: Query) -> Path:
    """<id>.txt, or the reference's <first 20 characters>-<MM-DD-HH-MM-SS>.txt; a number is
    added when that name is taken, so that every prompt keeps its own file."""
    if query.id is not None:
        path = folder / f"{query.id}.txt"
    else:
        stem = f"{query.text.replace('/', '')[:20]}-{datetime.now():%m-%d-%H-%M-%S}"
        path, n = folder / f"{stem}.txt", 2
        while path.exists():
            path, n = folder / f"{stem}-{n}.txt", n + 1
    # The ids were checked with the input; this is the guard should a check ever miss.
    if path.parent.resolve() != folder.resolve():
        raise PromptError(f"{query.where}: {path} lies outside --output-path {folder}; "
                          "not written")
    return path


def save(folder: Path, query: Query, filled, config: GenerateConfig, echo=print) -> None:
    """Print the styled answer(s) and write one line per answer to the query's file."""
    shown = filled.styled if use_color(config.color) else filled.plain
    if config.print_all_beams and len(shown) > 1:
        for i, styled in enumerate(shown):
            echo(f"Output beam {i}: {styled}")
    else:
        echo(f"Output: {shown[0]}")
    path = output_file(folder, query)
    atomic_write_text(path, "".join(answer + "\n" for answer in filled.answers))


class Streamer:
    """Prints each blank's text as its tokens come (sampling: one sequence per prompt)."""

    def __init__(self, tokenizer, end_tokens):
        self.tokenizer, self.end_tokens = tokenizer, set(end_tokens)
        self.blank, self.text, self.shown = None, "", Shown()

    def __call__(self, prompt: int, blank: int, ids: list[int]) -> None:
        if blank != self.blank:
            self.flush()
            print("\nGenerating: " if self.blank is None else "\n            ", end="")
            self.blank, self.shown = blank, Shown()
        self.text = settled(self.tokenizer, blank_ids(ids, self.end_tokens))
        self._show(self.text)

    def _show(self, text: str) -> None:
        print(self.shown.delta(text), end="", flush=True)

    def flush(self) -> None:
        if self.blank is not None:
            self._show(self.text)

    def close(self) -> None:
        if self.blank is not None:
            self.flush()
            print()


def enable_line_editing() -> None:
    """Arrow keys edit the line and recall earlier inputs (kept in memory for the session):
    `input` uses readline once it is imported. Not where it is missing (Windows), nor for
    piped input, which some readline builds would answer with terminal escapes."""
    if sys.stdin.isatty():
        try:
            import readline  # noqa: F401
        except ImportError:
            pass


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


def interactive(config: GenerateConfig, model, tokenizer, strategy) -> None:
    folder = Path(config.output_path)
    if is_rank0():
        enable_line_editing()
    while True:
        line = broadcast_object(read_query() if is_rank0() else None)
        if line is None:
            return
        try:
            query = parse_query(line, config, tokenizer, model.config.max_sequence_length,
                                "input")
        except PromptError as e:
            if is_rank0():
                print(f"error: {e}")
            continue
        start = time.perf_counter()
        if is_rank0():
            print(f"\nInput: {query.prompt.text}")
        streamer = Streamer(tokenizer, strategy.end_tokens) if is_rank0() else None
        filled = fill_blanks(model, tokenizer, [query.prompt], strategy, config.out_seq_length,
                             on_token=streamer)
        if is_rank0():
            streamer.close()
            save(folder, query, filled[0], config)
            print(f"\nTaken time {time.perf_counter() - start:.2f} s", flush=True)


def read_prompt_lines(path: str):
    """The file's lines, split at line feeds only (not where str.splitlines would), so that
    file:line is what `grep -n` counts; or the error, for rank 0 to hand to every rank."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return UsageError(f"cannot read --input-source {path}: {e}")
    try:
        return data.decode("utf-8-sig").split("\n")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return PromptError(f"{path}:{line}: not UTF-8 ({e.reason} at byte {e.start})")


def read_queries(config: GenerateConfig, tokenizer, max_sequence_length: int) -> list[Query]:
    """Every line of --input-source checked, ids included, so that a bad line stops the run
    before the model loads rather than after hours of decoding."""
    source = config.input_source
    lines = broadcast_object(read_prompt_lines(source) if is_rank0() else None)
    if isinstance(lines, Exception):
        raise lines
    queries, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        query = parse_query(line.strip(), config, tokenizer, max_sequence_length,
                            f"{source}:{n}")
        if query.id in seen:
            raise PromptError(f"{query.where}: id {query.id!r} is used on line {seen[query.id]} "
                              "too; each id names one output file")
        if query.id is not None:
            seen[query.id] = n
        queries.append(query)
    return queries


def from_file(config: GenerateConfig, model, tokenizer, strategy, queries: list[Query]) -> None:
    """The data-parallel groups share the prompts round-robin, each group decoding batches of
    --max-inference-batch-size and writing each batch's files as soon as it is done, so that a
    later failure loses none of them."""
    mine = queries[get_data_parallel_rank()::get_data_parallel_world_size()]
    writer = get_tensor_model_parallel_rank() == 0
    folder = Path(config.output_path)
    size = config.max_inference_batch_size
    echo = tqdm.write if same_terminal(sys.stdout, sys.stderr) else functools.partial(
        print, flush=True)
    with tqdm(total=len(mine), unit="prompt", disable=not writer, file=sys.stderr) as bar:
        for start in range(0, len(mine), size):
            batch = mine[start:start + size]
            filled = fill_blanks(model, tokenizer, [q.prompt for q in batch], strategy,
                                 config.out_seq_length)
            if writer:
                for query, result in zip(batch, filled):
                    save(folder, query, result, config, echo=echo)
            bar.update(len(batch))


def generate(config: GenerateConfig, runtime: RuntimeConfig, glm: GLMConfig,
             sampling: SamplingConfig, tokenizer) -> None:
    """The input read and checked with the tokenizer alone, then the model loaded and run."""
    check_vocab_size(tokenizer, glm.vocab_size)
    strategy = build_strategy(tokenizer, glm.vocab_size, sampling)
    queries = None
    if config.input_source != "interactive":
        # rank 0 reads the file and hands it to the others: the process group comes first
        initialize_distributed(runtime.model_parallel_size, device=runtime.device,
                               local_rank=runtime.local_rank)
        queries = read_queries(config, tokenizer, glm.max_sequence_length)
    if get_tensor_model_parallel_rank() == 0:
        os.makedirs(config.output_path, exist_ok=True)
    model = initialize_model(glm, runtime)
    if not runtime.load and is_rank0():
        print("warning: no --load, generating from randomly initialised weights",
              file=sys.stderr)
    if queries is None:
        interactive(config, model, tokenizer, strategy)
    else:
        from_file(config, model, tokenizer, strategy, queries)


def main(argv=None) -> int:
    args = parse_args(argv)
    tokenizer = get_tokenizer(args.tokenizer_type, args.tokenizer_model)
    try:
        generate(config_from_args(GenerateConfig, args), config_from_args(RuntimeConfig, args),
                 model_config(args), config_from_args(SamplingConfig, args), tokenizer)
    except PromptError as e:
        if is_rank0():
            print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    run(main)
