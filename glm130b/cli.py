"""What every command-line entry point shares: one line on stderr and a non-zero exit for the
errors a user can fix (a missing file, a bad checkpoint), never a traceback for those; the
flags every entry point that runs the model takes; and the one place where parsed arguments
become the typed configs the library takes."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable, Optional, Sequence, TypeVar

from .config import GLMConfig
from .errors import GLMError, UsageError

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
    g.add_argument("--model-parallel-size", "--tensor-model-parallel-size", type=int, default=1,
                   help="tensor-parallel size")
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


def add_api_key_args(group, purpose: str) -> None:
    """--api-key-file PATH or --api-key KEY (default: $GLM_API_KEY); read with `api_key`."""
    key = group.add_mutually_exclusive_group()
    key.add_argument("--api-key-file", default=None, metavar="PATH",
                     help=f"{purpose}, KEY the file's first line (default: $GLM_API_KEY, if set)")
    key.add_argument("--api-key", default=None,
                     help="the key itself; works, but every user of the machine sees it in "
                          "`ps`: prefer GLM_API_KEY or --api-key-file")


def api_key(flag: Optional[str], key_file: Optional[str], *, warn: bool = True) -> Optional[str]:
    """An API key from --api-key-file's first line, --api-key (with a warning: `ps` shows a
    command line to every user of the machine) or $GLM_API_KEY; None when none is given. An
    empty key is refused: it would let anyone in."""
    if flag is not None:
        if warn:
            print("warning: --api-key on the command line is visible to every user of this "
                  "machine (ps); use GLM_API_KEY or --api-key-file", file=sys.stderr)
        key, origin = flag, "--api-key"
    elif key_file is not None:
        key, origin = _read_key_file(key_file), f"--api-key-file {key_file}"
    elif "GLM_API_KEY" in os.environ:
        key, origin = os.environ["GLM_API_KEY"], "GLM_API_KEY"
    else:
        return None
    if not key.strip():
        raise UsageError(f"{origin}: the API key is empty (give none to serve without one)")
    return key


def _read_key_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise UsageError(f"--api-key-file {path}: cannot read it: {reason}") from None
