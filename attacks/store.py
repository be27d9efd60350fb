"""The files an evaluation keeps to resume its work, written and read one way.

Four kinds of file carry work across an interruption: an evaluation's state (JSON: verdicts and
counts), the snapshot of its batch in flight, the adversarial examples it keeps, and the batches of
transfer examples made so far (tensors, ``torch.save``). Each is a :class:`Store` file: a header
with the format's kind and version and the key of the work it belongs to, then the payload.

- Writes are atomic: a reader, or a rerun after a crash or Ctrl-C in the middle of a write, sees the
  old file or the new one, never half of one, and no temporary file is left behind.
- Reads never unpickle: JSON, or ``torch.load(..., weights_only=True)``.
- A read says what it found (:class:`Found`): the payload of this work's file, or why there is
  none: no file, a damaged one, one of an earlier version of the format, or another work's (its key
  differs). What to do about each is the caller's choice: a lost snapshot is only a lost shortcut,
  a state of another evaluation is refused.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Literal, Mapping, Sequence

import torch

FORMAT = "robust-kd attacks"
Problem = Literal["missing", "damaged", "version", "other"]


def write_atomically(path: Path, write: Callable[[IO[Any]], None], mode: str = "wb") -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it to ``path``. The content is
    made in memory first, so that a full disk is an OSError naming ``path`` (``torch.save`` would turn
    a failed write into a RuntimeError), and ``path`` keeps its old content."""
    buffer: IO[Any] = io.BytesIO() if "b" in mode else io.StringIO()
    write(buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(buffer.getvalue())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename not in (None, tmp) or err.filename2 is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def canonical(key: Mapping[str, Any]) -> dict[str, Any]:
    """``key`` as JSON gives it back (tuples as lists, other objects as their text): two keys of the
    same work compare equal whichever way they were built or read."""
    return json.loads(json.dumps(dict(key), sort_keys=True, default=str))


@dataclass(frozen=True)
class Found:
    """What a read found: ``data`` (the payload) where the file is this work's, else ``problem``."""

    data: dict[str, Any] | None = None
    problem: Problem | None = None
    error: str = ""                       # damaged: the type of the error that reading it raised
    key: dict[str, Any] | None = None     # other: the key the file holds


@dataclass(frozen=True)
class Store:
    """One kind of file: ``kind`` names it, ``version`` its layout (raise it when the payload
    changes: files of another layout then read as ``version``), ``encoding`` how it is written."""

    kind: str
    version: int
    encoding: Literal["json", "torch"]

    def write(self, path: Path, key: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        content = {"format": FORMAT, "kind": self.kind, "version": self.version, "key": canonical(key), **data}
        if self.encoding == "json":
            write_atomically(path, lambda f: json.dump(content, f), mode="w")
        else:
            write_atomically(path, lambda f: torch.save(content, f))

    def read(self, path: Path, key: Mapping[str, Any] | None, fields: Sequence[str] = ()) -> Found:
        """The payload of ``path`` if it is a file of this kind and version with every one of ``fields``
        and, where ``key`` is given, of that key."""
        if not path.is_file():
            return Found(problem="missing")
        try:
            content = self._load(path)
            if not isinstance(content, dict) or content.get("format") != FORMAT or content.get("kind") != self.kind:
                raise ValueError(f"not a {self.kind} file")
        except Exception as err:    # truncated or foreign: json and torch.load raise several kinds
            return Found(problem="damaged", error=type(err).__name__)
        if content.get("version") != self.version:
            return Found(problem="version")
        if any(name not in content for name in fields) or not isinstance(content.get("key"), dict):
            return Found(problem="damaged", error="KeyError")
        if key is not None and content["key"] != canonical(key):
            return Found(problem="other", key=content["key"])
        return Found(data={k: v for k, v in content.items() if k not in ("format", "kind", "version")})

    def _load(self, path: Path) -> Any:
        if self.encoding == "json":
            return json.loads(path.read_text(encoding="utf-8"))
        return torch.load(path, map_location="cpu", weights_only=True)
