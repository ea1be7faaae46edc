"""What every command-line entry point shares: one line on stderr and a non-zero exit for the
errors a user can fix (a missing file, a bad checkpoint), never a traceback for those."""
from __future__ import annotations

import sys
from typing import Callable, Optional, Sequence

from .checkpoint import CheckpointError


class UsageError(Exception):
    """Bad input from the user; the message names what and where."""


USER_ERRORS = (UsageError, CheckpointError, OSError)


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
    sys.exit(code or 0)
