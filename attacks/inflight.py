"""Snapshots of the batch in flight, so that an interrupted evaluation resumes inside a long attack.

A batch of Square (5000 queries), of APGD-T/FAB-T (9 targets × 100 steps) or of a single 100-step
APGD run on a robust model can take many minutes on a CPU; without snapshots an interruption would
throw all of it away. An attack that can resume from the middle of its work opens a
:class:`Resumable` (:func:`begin`, a context manager), takes the state it saved there
(``restored``), and offers its state (:meth:`Resumable.offer`) at points where that state is whole,
e.g. between two steps. The evaluation around it (:func:`tracking`) writes an offered state at most
every :data:`SNAPSHOT_SECONDS` and hands it back when the same batch runs again. Outside
:func:`tracking` every call is a no-op.

Runs nest: an attack made of parts (restarts, targets: :class:`Parts`) opens one level, and each
part's iterative run opens a level inside it. A snapshot holds every open level, outermost first,
each with the state it last held; a resumed run restores a level only where all levels around it
were restored and have not moved on since (a part finished after the restore starts its next part
from scratch, as it should).

An attack's randomness is tied to its points and its own iteration numbers (:mod:`attacks.rng`), so
a run continued from a snapshot makes exactly the examples of an uninterrupted run. A level names
the attack kind, the ordinal of that kind's run within its parent level (or the batch) since the
parent last moved on (an attack composed of two Square runs resumes the right one) and the shape of
its input; any mismatch and that run starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import time
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from .atomic import write_atomically

SNAPSHOT_SECONDS = 30.0   # at most one snapshot per this many seconds (each is a device-to-host copy)
WRITE_SPACING = 20.0      # and at least this many times the last write's duration between two: at most
                          # 5% of the time goes to writing them (large batches, slow disks)

State = Mapping[str, torch.Tensor]
_clock = time.monotonic


class Resumable:
    """One run's link to the snapshots of its batch; inert outside :func:`tracking`. Use it as a
    context manager: the run's level is open (its state goes into snapshots) until it exits."""

    def __init__(self, batch: "BatchSnapshots | None", kind: str, ordinal: int, shape: tuple[int, ...],
                 restored: dict[str, torch.Tensor] | None) -> None:
        self._batch, self.kind, self.ordinal, self.shape = batch, kind, ordinal, shape
        self.restored = restored
        self.as_restored = restored is not None   # restored and not moved on since: inner runs may resume too
        self.state: Callable[[], State] | None = None
        self.inner_calls: dict[str, int] = {}

    def __enter__(self) -> "Resumable":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._batch is not None:
            self._batch.close(self)

    def discard(self) -> None:
        """The restored state does not fit this run after all: it starts afresh."""
        self.restored, self.as_restored = None, False

    def hold(self, state: Callable[[], State]) -> None:
        """The run's current state, as snapshots of the runs inside it record it; nothing moved on
        (a restored run holding its restored state, a run holding its start)."""
        self.state = state

    def offer(self, state: Callable[[], State]) -> None:
        """The run moved on to ``state``: the runs begun inside it before are over. ``state`` is
        called (and its tensors copied to the host) only when a snapshot is due, so offering on
        every step costs a clock reading."""
        self.state, self.as_restored = state, False
        self.inner_calls.clear()
        if self._batch is not None and self._batch.due():
            self._batch.write()


class BatchSnapshots:
    """The snapshots of one batch: what a previous run of it saved, and where new ones go."""

    def __init__(self, saved: dict | None, write: Callable[[dict], None], seconds: float | None = None) -> None:
        levels = saved.get("levels") if isinstance(saved, dict) else None
        self.saved: list[dict] = levels if isinstance(levels, list) else []
        self._write = write
        self.seconds = SNAPSHOT_SECONDS if seconds is None else seconds
        self._next = _clock() + self.seconds
        self._calls: dict[str, int] = {}
        self._open: list[Resumable] = []
        self.restored = 0       # runs restored from ``saved``

    def open(self, kind: str, like: torch.Tensor, names: tuple[str, ...]) -> Resumable:
        outer = self._open[-1] if self._open else None
        calls = self._calls if outer is None else outer.inner_calls
        ordinal = calls.get(kind, 0)
        calls[kind] = ordinal + 1
        shape, depth, restored = tuple(like.shape), len(self._open), None
        if depth < len(self.saved) and all(run.as_restored for run in self._open):
            level = self.saved[depth]
            if isinstance(level, dict) and (level.get("kind"), level.get("ordinal"), tuple(level.get("shape", ()))) == \
                    (kind, ordinal, shape):
                tensors = level.get("tensors")
                if isinstance(tensors, dict) and sorted(tensors) == sorted(names) and \
                        all(isinstance(t, torch.Tensor) for t in tensors.values()):
                    restored = {name: t.to(like.device) for name, t in tensors.items()}
                    self.restored += 1
        run = Resumable(self, kind, ordinal, shape, restored)
        self._open.append(run)
        return run

    def close(self, run: Resumable) -> None:
        if run in self._open:
            del self._open[self._open.index(run):]

    def due(self) -> bool:
        return _clock() >= self._next

    def write(self) -> None:
        """Write a snapshot of every open level, unless one of them holds no state yet."""
        if any(run.state is None for run in self._open):
            return
        tick = _clock()
        levels = [{"kind": run.kind, "ordinal": run.ordinal, "shape": list(run.shape),
                   "tensors": {name: t.detach().to("cpu", copy=True) for name, t in run.state().items()}}
                  for run in self._open]
        self._write({"levels": levels})
        now = _clock()
        self._next = now + max(self.seconds, (now - tick) * WRITE_SPACING)


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
    ``names``; ``restored`` holds them (on ``like``'s device) where this run was snapshotted before.
    Use the result as a context manager around the run."""
    batch = _current.get()
    if batch is None:
        return Resumable(None, kind, 0, tuple(like.shape), None)
    return batch.open(kind, like, names)


def counters(*values: int) -> torch.Tensor:
    """A run's integer bookkeeping (its next step, ...) as one tensor of its state."""
    return torch.tensor(values, dtype=torch.int64)


class Parts:
    """Resuming an attack made of parts run one after another on the points still going (restarts,
    targets): its state between parts is the examples so far (``result``), which points are still
    going (``todo``: indices or a mask) and how many parts are finished. A part's own run may open
    a level inside it and resume in the middle.

        with Parts("apgd-t", result, todo) as parts:
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
        if restored is not None:
            if restored["todo"].dtype == todo.dtype and restored["result"].dtype == result.dtype:
                result.copy_(restored["result"])
                self.todo, self.done = restored["todo"], int(restored["parts_done"])
            else:
                self.run.discard()
        self.run.hold(self._state(self.done, self.todo))

    def __enter__(self) -> "Parts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.run.__exit__(*exc)

    def _state(self, done: int, todo: torch.Tensor) -> Callable[[], State]:
        return lambda: {"result": self.result, "todo": todo, "parts_done": torch.tensor(done, dtype=torch.int64)}

    def finished_before(self, part: int) -> bool:
        """Whether ``part`` was finished by the run this one resumes."""
        return part < self.done

    def finish(self, part: int, todo: torch.Tensor) -> None:
        self.run.offer(self._state(part + 1, todo))


class SnapshotFile:
    """Where an evaluation keeps the last snapshot of its batch in flight: one file beside its state
    file, written atomically, read with ``weights_only=True``, removed once a batch is finished (the
    state file then holds the batch's verdicts). A snapshot of another evaluation (``key``) is
    ignored and replaced; a damaged one too, and ``damaged`` says so."""

    FIELDS = ("key", "step", "rows", "forwards", "backwards", "seconds", "snapshot")

    def __init__(self, state_path: Path | None, key: dict[str, Any]) -> None:
        self.path = None if state_path is None else state_path.with_suffix(".inflight.pt")
        self.key = json.dumps(key, sort_keys=True, default=str)
        self.damaged: str | None = None     # why a snapshot found could not be used (damaged, or of an older format)
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
        if "levels" not in data["snapshot"]:     # one run's state, as snapshots were before runs nested
            self.damaged = (f"'{self.path}' was written by an earlier version of attacks.inflight: the batch it "
                            "was made in starts over")
            return None
        return data if data["key"] == self.key else None

    def for_batch(self, step: str, rows: list[int]) -> dict[str, Any] | None:
        """The saved snapshot if it is one of this batch (same attack, same points)."""
        saved = self.saved
        return saved if saved is not None and saved["step"] == step and saved["rows"] == rows else None

    def tracking(self, step: str, rows: list[int], counts: Callable[[], tuple[int, int, float]],
                 before: Callable[[], None] = lambda: None) -> contextlib.AbstractContextManager:
        """The attacks run inside resume from this batch's snapshot, if saved, and write theirs
        (:meth:`writer`); without a state file nothing is snapshotted."""
        if self.path is None:
            return contextlib.nullcontext()
        saved = self.for_batch(step, rows)
        return tracking(None if saved is None else saved["snapshot"], self.writer(step, rows, counts, before))

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
            write_atomically(self.path, lambda f: torch.save(data, f))
            self.present = True
        return write

    def clear(self) -> None:
        """The batch in flight is finished (or was another one): its snapshot is no longer needed."""
        self.saved = None
        if self.present:
            self.path.unlink(missing_ok=True)
            self.present = False
