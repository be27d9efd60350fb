"""Atomic writes for the evaluation's state, results and snapshots: a reader, or a rerun after a
crash or Ctrl-C in the middle of a write, sees the old file or the new one, never half of one, and
no temporary file is left behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def write_atomically(path: Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
