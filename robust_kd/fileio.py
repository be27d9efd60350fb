"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def _holder_of(handle: IO[str]) -> str:
    """What the holder of a lock wrote into its file (who it is), or ''."""
    try:
        handle.seek(0)
        return " ".join(handle.read(500).split())
    except (OSError, ValueError):
        return ""


@contextmanager
def one_at_a_time(path: str | Path, busy: str | Callable[[str], str], holder: str = "") -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block; a second
    holder, in this process or another, gets ``UserError(busy)`` at once instead of waiting (``busy``
    may be a function of the ``holder`` text the first one wrote into the file: who holds it). The OS
    releases the lock of a process that dies, so a killed run never leaves it held. Where ``fcntl``
    is missing (Windows), or the file system has no locks, nothing is locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    from .errors import UserError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:     # held by someone else
            raise UserError(busy if isinstance(busy, str) else busy(_holder_of(handle))) from None
        except OSError:             # a file system without locks (ENOLCK, EOPNOTSUPP): run unlocked
            yield
            return
        try:
            if holder:
                handle.seek(0)
                handle.truncate()
                handle.write(holder + "\n")
                handle.flush()
            yield
        finally:
            if holder:      # a note about a holder that is gone would mislead whoever reads it next
                handle.truncate(0)
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
