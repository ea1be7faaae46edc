"""What every command-line entry point shares: one line on stderr and a non-zero exit for the
errors a user can fix (a missing file, a bad checkpoint), never a traceback for those."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from .errors import GLMError

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
