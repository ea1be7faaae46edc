"""Writing a file so that no reader ever sees half of it: write beside it under a temporary
name, then rename into place (atomic on POSIX). An interrupted write leaves the old file, or
none, never a truncated one; a killed writer leaves its temporary file, which
`leftover_temporaries` finds for the next start to remove."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

# `.NAME.tmpPID`: hidden, and never matched by the `*.pt` or `latest` a reader looks for.
TEMPORARY = re.compile(r"\..+\.tmp\d+$")


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path, mode: str = "w", **kwargs):
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def leftover_temporaries(folder) -> list[Path]:
    """The temporary files of atomic writes that never finished, directly in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if TEMPORARY.match(p.name) and p.is_file())
