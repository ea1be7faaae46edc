"""Every error the package raises on purpose, in one module that imports nothing, so that any
layer can raise them and every entry point can report them in one line without pulling in the
layers that raise them (a data tool reports a bad file without importing torch).

`GLMError` and `OSError` are what the entry points report as `error: <message>` with a
non-zero exit; the rest are control flow between a library and the code that calls it.
"""
from __future__ import annotations

from typing import Optional


class GLMError(Exception):
    """Something the user can fix; the message says what and where, in one line."""


class UsageError(GLMError):
    """Bad arguments or input from the user."""


class CheckpointError(GLMError):
    """A checkpoint that cannot be used: missing, incomplete, of another shape or layout."""


class ConfigError(UsageError):
    """A task YAML that cannot be used; the message is `<file>: <what is wrong>`."""


class PromptError(UsageError):
    """A prompt that cannot be generated from (too long, malformed); generate exits 2."""


class TokenFileError(OSError):
    """A .bin/.idx pair that cannot be read as one; the message names the file and the fault.
    An OSError, like gzip's BadGzipFile, so entry points report it in one line."""


class DataError(ValueError):
    """What is wrong with one evaluation example; the reader adds file and line."""


class BadLine(ValueError):
    """One corpus line that cannot be tokenized: preprocessing lists it and goes on."""

    def __init__(self, reason: str, where: str = ""):
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason, self.where = reason, where

    def __reduce__(self):  # travels back from the worker processes with its parts intact
        return BadLine, (self.reason, self.where)


class Unavailable(Exception):
    """The server takes no more requests for now: its queue is full, or the model failed."""


class ApiError(Exception):
    """An HTTP request that gets a 4xx/5xx answer in OpenAI's error shape."""

    def __init__(self, status: int, message: str, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class Stopped(Exception):
    """SIGTERM or Ctrl-C reached the server, once uvicorn has finished its requests."""
