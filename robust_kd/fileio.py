"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


class _Recording:
    """A file that remembers the error of a failed write: ``torch.save`` reports one as a RuntimeError
    ("unexpected pos"), which would hide that the disk is full."""

    def __init__(self, file: IO[Any]) -> None:
        self._file = file
        self.failure: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as err:
            self.failure = self.failure or err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def _about(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` where it named nothing (a failed write) or the temporary file beside it."""
    named = err.filename
    if err.filename2 is not None or (named is not None and not os.fsdecode(named).endswith(".tmp")):
        return err
    return OSError(err.errno, err.strerror, str(path))


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` in one rename. On any
    failure (a full disk included) the temporary file is removed and ``path`` is left as it was; an
    OSError names ``path``."""
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode) as raw:
            f = _Recording(raw)
            try:
                yield f  # type: ignore[misc]
            except Exception as err:
                if f.failure is not None and not isinstance(err, OSError):
                    raise f.failure from err
                raise
            raw.flush()
            os.fsync(raw.fileno())
        _readable_as_usual(tmp)
        os.replace(tmp, path)
    except OSError as err:
        _remove(tmp)
        named = _about(err, path)
        if named is err:
            raise
        raise named from err
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str) -> None:
    if tmp:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:      # the folder became read-only after the file was made in it
            pass


def _readable_as_usual(tmp: str) -> None:
    """Give the file the mode a plain ``open`` would (mkstemp makes it private); where the file system
    has no modes (some network and FAT mounts refuse chmod), it keeps the one it has."""
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)
    except OSError:
        pass


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
