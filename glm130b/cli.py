"""What every command-line entry point shares: one line on stderr and a non-zero exit for the
errors a user can fix (a missing file, a bad checkpoint), never a traceback for those; the
flags every entry point that runs the model takes; and the one place where parsed arguments
become the typed configs the library takes."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable, Optional, Sequence, TypeVar

from .config import GLMConfig
from .errors import GLMError

Config = TypeVar("Config")

USER_ERRORS = (GLMError, OSError)


def run(main: Callable[[Optional[Sequence[str]]], Optional[int]],
        argv: Optional[Sequence[str]] = None) -> None:
    try:
        code = main(argv)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    close_process_group(wait=not code)
    sys.exit(code or 0)


def close_process_group(wait: bool) -> None:
    """Tear the process group down, after every rank has finished (`wait`) when the run ended
    well. Left to interpreter exit, gloo's threads were seen to abort finished ranks
    ("terminate called without an active exception": exit code 250, or SIGABRT)."""
    if "torch" not in sys.modules:  # a tool that never imported torch has no process group
        return
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def add_runtime_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments every entry point that runs the model takes, with one meaning."""
    g = parser.add_argument_group("parallelism, precision and seed")
    g.add_argument("--model-parallel-size", type=int, default=1, help="tensor-parallel size")
    precision = g.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true")
    precision.add_argument("--bf16", action="store_true")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--local_rank", "--local-rank", type=int, default=None,
                   help=argparse.SUPPRESS)  # set by the DeepSpeed launcher
    return parser


def require_at_least_one(parser: argparse.ArgumentParser, args: argparse.Namespace,
                         *names: str) -> None:
    """argparse's own error (usage, exit code 2) for a count flag below 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def config_from_args(cls: type[Config], args: argparse.Namespace, **values) -> Config:
    """A typed config (a dataclass) from the parsed arguments of its fields' names, `values`
    taking precedence: where an entry point's `Namespace` becomes what the library takes."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
             if hasattr(args, f.name)}
    return cls(**{**given, **values})


def model_config(args: argparse.Namespace) -> GLMConfig:
    """The model of `add_model_args`' arguments (--preset, then --num-layers ...)."""
    return GLMConfig.from_flags(args.preset, **{f.name: getattr(args, f.name, None)
                                                for f in dataclasses.fields(GLMConfig)})
