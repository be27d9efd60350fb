"""Snapshots of the batch in flight, so that an interrupted evaluation resumes inside a long attack.

A batch of Square (5000 queries) or of APGD-T/FAB-T (9 targets) can take the better part of an
hour on a CPU; without snapshots an interruption would throw all of it away. An attack that can
resume from the middle of its work opens a :class:`Resumable` at its start (:func:`begin`), takes
the state it saved there (``restored``), and offers its state (:meth:`Resumable.offer`) at points
where that state is whole, e.g. between two forward passes. The evaluation around it
(:func:`tracking`) writes an offered state at most every :data:`SNAPSHOT_SECONDS` and hands it back
when the same batch runs again. Outside :func:`tracking` every call is a no-op.

An attack's randomness is tied to its points and its own iteration numbers (:mod:`attacks.rng`), so
a run continued from a snapshot makes exactly the examples of an uninterrupted run. A snapshot names
the attack kind, the ordinal of that kind's call within the batch (an attack composed of two Square
runs resumes the right one) and the shape of its input; any mismatch and the attack starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch


SNAPSHOT_SECONDS = 30.0   # at most one snapshot per this many seconds (each is a device-to-host copy)

State = Mapping[str, torch.Tensor]


class Resumable:
    """One attack run's link to the snapshots of its batch; inert outside :func:`tracking`."""

    def __init__(self, batch: "BatchSnapshots | None", kind: str, ordinal: int, shape: tuple[int, ...],
                 restored: dict[str, torch.Tensor] | None) -> None:
        self._batch, self.kind, self.ordinal, self.shape = batch, kind, ordinal, shape
        self.restored = restored

    def offer(self, state: Callable[[], State]) -> None:
        """Offer the run's state; ``state`` is called (and its tensors copied to the host) only when a
        snapshot is due, so offering on every step costs a clock reading."""
        if self._batch is not None and self._batch.due():
            tensors = {name: t.detach().to("cpu", copy=True) for name, t in state().items()}
            self._batch.write({"kind": self.kind, "ordinal": self.ordinal, "shape": list(self.shape),
                               "tensors": tensors})


class BatchSnapshots:
    """The snapshots of one batch: what a previous run of it saved, and where new ones go."""

    def __init__(self, saved: dict | None, write: Callable[[dict], None], seconds: float | None = None) -> None:
        self.saved, self._write = saved, write
        self.seconds = SNAPSHOT_SECONDS if seconds is None else seconds
        self._last = time.monotonic()
        self._calls: dict[str, int] = {}
        self.restored = 0

    def open(self, kind: str, like: torch.Tensor, names: tuple[str, ...]) -> Resumable:
        ordinal = self._calls.get(kind, 0)
        self._calls[kind] = ordinal + 1
        shape = tuple(like.shape)
        saved, restored = self.saved, None
        if saved is not None and (saved.get("kind"), saved.get("ordinal"), tuple(saved.get("shape", ()))) == (kind, ordinal, shape):
            tensors = saved.get("tensors")
            if isinstance(tensors, dict) and sorted(tensors) == sorted(names) and \
                    all(isinstance(t, torch.Tensor) for t in tensors.values()):
                restored = {name: t.to(like.device) for name, t in tensors.items()}
                self.restored += 1
        return Resumable(self, kind, ordinal, shape, restored)

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.seconds

    def write(self, snapshot: dict) -> None:
        self._write(snapshot)
        self._last = time.monotonic()


_current: ContextVar[BatchSnapshots | None] = ContextVar("attack_batch_snapshots", default=None)


@contextlib.contextmanager
def tracking(saved: dict | None, write: Callable[[dict], None], seconds: float | None = None) -> Iterator[BatchSnapshots]:
    """Let the attacks run inside resume from ``saved`` (a snapshot ``write`` was given before, or
    None) and pass their new snapshots to ``write``."""
    batch = BatchSnapshots(saved, write, seconds)
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


def begin(kind: str, like: torch.Tensor, names: tuple[str, ...]) -> Resumable:
    """Open a resumable run of ``kind`` on the batch ``like`` (its input) whose state is the tensors
    ``names``; ``restored`` holds them (on ``like``'s device) where this run was snapshotted before."""
    batch = _current.get()
    if batch is None:
        return Resumable(None, kind, 0, tuple(like.shape), None)
    return batch.open(kind, like, names)


class Parts:
    """Resuming an attack made of parts run one after another on the points still going (restarts,
    targets): its state between parts is the examples so far (``result``), which points are still
    going (``todo``: indices or a mask) and how many parts are finished.

        parts = Parts("apgd-t", result, todo)
        todo = parts.todo                  # the restored one where this run resumes
        for part, ... in enumerate(...):
            if parts.finished_before(part): continue
            ... run the part on todo, write into result, update todo ...
            parts.finish(part, todo)
    """

    NAMES = ("result", "todo", "parts_done")

    def __init__(self, kind: str, result: torch.Tensor, todo: torch.Tensor) -> None:
        self.run = begin(kind, result, self.NAMES)
        self.result, self.todo, self.done = result, todo, 0
        restored = self.run.restored
        if restored is not None and restored["todo"].dtype == todo.dtype and restored["result"].dtype == result.dtype:
            result.copy_(restored["result"])
            self.todo, self.done = restored["todo"], int(restored["parts_done"])

    def finished_before(self, part: int) -> bool:
        """Whether ``part`` was finished by the run this one resumes."""
        return part < self.done

    def finish(self, part: int, todo: torch.Tensor) -> None:
        self.run.offer(lambda: {"result": self.result, "todo": todo,
                                "parts_done": torch.tensor(part + 1, dtype=torch.int64)})


class SnapshotFile:
    """Where an evaluation keeps the last snapshot of its batch in flight: one file beside its state
    file, written atomically, read with ``weights_only=True``, removed once a batch is finished (the
    state file then holds the batch's verdicts). A snapshot of another evaluation (``key``) is
    ignored and replaced; a damaged one too, and ``damaged`` says so."""

    FIELDS = ("key", "step", "rows", "forwards", "backwards", "seconds", "snapshot")

    def __init__(self, state_path: Path | None, key: dict[str, Any]) -> None:
        self.path = None if state_path is None else state_path.with_suffix(".inflight.pt")
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.damaged: str | None = None     # why a snapshot found could not be read (it is then not used)
        self.present = self.path is not None and self.path.is_file()   # a file to remove once a batch is done
        self.saved = self._load()

    def _load(self) -> dict[str, Any] | None:
        if not self.present:
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or any(field not in data for field in self.FIELDS) or \
                    not isinstance(data["snapshot"], dict) or not isinstance(data["rows"], list):
                raise ValueError("not a snapshot")
        except Exception as err:    # a truncated or foreign file: torch.load raises several kinds
            # only a shortcut is lost: the batch starts over (the state file holds the finished work)
            self.damaged = (f"'{self.path}' is damaged ({type(err).__name__}): the batch it was made in starts "
                            "over")
            return None
        return data if data["key"] == self.key else None

    def for_batch(self, step: str, rows: list[int]) -> dict[str, Any] | None:
        """The saved snapshot if it is one of this batch (same attack, same points)."""
        saved = self.saved
        return saved if saved is not None and saved["step"] == step and saved["rows"] == rows else None

    def writer(self, step: str, rows: list[int], counts: Callable[[], tuple[int, int, float]],
               before: Callable[[], None] = lambda: None) -> Callable[[dict], None]:
        """Write a snapshot of this batch with its passes and seconds so far (``counts()``), after
        calling ``before``."""
        def write(snapshot: dict) -> None:
            if self.path is None:
                return
            before()
            forwards, backwards, seconds = counts()
            data = {"key": self.key, "step": step, "rows": rows, "forwards": int(forwards),
                    "backwards": int(backwards), "seconds": float(seconds), "snapshot": snapshot}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(data, f)
            os.replace(tmp, self.path)
            self.present = True
        return write

    def clear(self) -> None:
        """The batch in flight is finished (or was another one): its snapshot is no longer needed."""
        self.saved = None
        if self.present:
            self.path.unlink(missing_ok=True)
            self.present = False
