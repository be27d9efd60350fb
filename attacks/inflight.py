"""Snapshots of the batch in flight, so that an interrupted evaluation resumes inside a long attack.

A batch of Square (5000 queries), of APGD-T/FAB-T (9 targets × 100 steps) or of a single 100-step
APGD run on a robust model can take many minutes on a CPU; without snapshots an interruption would
throw all of it away.

An attack keeps what it carries from step to step in a :class:`RunState`, a dataclass of tensors
and integers, and runs its steps with :meth:`RunState.steps`::

    @dataclass
    class MomentumState(RunState):
        x_adv: torch.Tensor
        velocity: torch.Tensor
        step: int = 0

    with resume(MomentumState, x, lambda: MomentumState(x.clone(), torch.zeros_like(x))) as run:
        for _ in run.steps(self.steps):
            ...  # read and assign run.x_adv, run.velocity

That is all an attack writes: :func:`resume` gives back the state the same run was snapshotted in
(or a fresh one), and :meth:`RunState.steps` offers the state for a snapshot before each step. The
evaluation around it (:func:`tracking`) writes an offered state at most every
:data:`SNAPSHOT_SECONDS` and hands it back when the same batch runs again. Outside :func:`tracking`
nothing is written. :class:`attacks.iterative.IterativeAttack` wraps this for the common case.

Runs nest: an attack made of parts (restarts, targets: :class:`Parts`) opens one level, and each
part's iterative run opens a level inside it. A snapshot holds every open level, outermost first,
each with the state it last offered; a resumed run restores a level only where all levels around
it were restored and have not moved on since (a part finished after the restore starts its next
part from scratch, as it should).

An attack's randomness is tied to its points and its own iteration numbers (:mod:`attacks.rng`), so
a run continued from a snapshot makes exactly the examples of an uninterrupted run. A level names
its kind, the ordinal of that kind's run within its parent level (or the batch) since the parent
last moved on (an attack composed of two Square runs resumes the right one) and the shape of its
input; any mismatch and that run starts afresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from contextvars import ContextVar
from typing import Any, Callable, ClassVar, Iterator, TypeVar

import torch

from . import work

SNAPSHOT_SECONDS = 30.0   # at most one snapshot per this many seconds (each is a device-to-host copy)
WRITE_SPACING = 20.0      # and at least this many times the last write's duration between two: at most
                          # 5% of the time goes to writing them (large batches, slow disks)

_clock = time.monotonic
S = TypeVar("S", bound="RunState")


class RunState:
    """Base of what an attack's run carries from step to step: a dataclass whose fields are tensors
    and integers (its step counter, ``step``, among them). Subclasses add fields only; ``kind``
    names the run in snapshots (by default the class name)."""

    kind: ClassVar[str] = ""
    _level: "Level | None" = None

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def restored(cls: type[S], tensors: dict[str, torch.Tensor]) -> S:
        """The state from a snapshot's tensors (integer fields come back as ints)."""
        numbers = {f.name for f in dataclasses.fields(cls) if f.type in (int, "int")}  # type: ignore[arg-type]
        return cls(**{name: int(t) if name in numbers else t for name, t in tensors.items()})

    def fields_now(self) -> dict[str, Any]:
        """The fields as they are now: tensors by reference, integers by value."""
        return {name: getattr(self, name) for name in self.names()}

    def offer(self) -> None:
        """The run moved on to its current state, which is whole (e.g. between two steps): the runs begun
        inside it before are over, and a snapshot may be taken of it. Offering costs a clock reading; the
        tensors are copied to the host only when a snapshot is due."""
        if self._level is not None:
            self._level.offer(self.fields_now())

    def steps(self, total: int) -> Iterator[int]:
        """The step numbers from ``self.step`` (0, or where the run was snapshotted) up to ``total``.
        Before each step the state is offered and the step reported to the progress (:mod:`attacks.work`);
        after it ``self.step`` moves on."""
        while self.step < total:  # type: ignore[attr-defined]
            self.offer()
            work.advance(self.step, total)  # type: ignore[attr-defined]
            yield self.step  # type: ignore[attr-defined]
            self.step += 1  # type: ignore[attr-defined]


class Level:
    """One open run's place in the snapshots of its batch; inert outside :func:`tracking`."""

    def __init__(self, batch: "BatchSnapshots | None", kind: str, ordinal: int, shape: tuple[int, ...],
                 restored: dict[str, torch.Tensor] | None) -> None:
        self._batch, self.kind, self.ordinal, self.shape = batch, kind, ordinal, shape
        self.restored = restored
        self.as_restored = restored is not None   # restored and not moved on since: inner runs may resume too
        self.fields: dict[str, Any] | None = None
        self.inner_calls: dict[str, int] = {}

    def hold(self, fields: dict[str, Any]) -> None:
        """The run's state, as snapshots of the runs inside it record it; nothing moved on (a
        restored run holding its restored state, a run holding its start)."""
        self.fields = fields

    def offer(self, fields: dict[str, Any]) -> None:
        self.fields, self.as_restored = fields, False
        self.inner_calls.clear()
        if self._batch is not None and self._batch.due():
            self._batch.write()

    def tensors(self) -> dict[str, torch.Tensor]:
        assert self.fields is not None
        return {name: (v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor)
                       else torch.tensor(v, dtype=torch.int64)) for name, v in self.fields.items()}


class BatchSnapshots:
    """The snapshots of one batch: what a previous run of it saved, and where new ones go."""

    def __init__(self, saved: dict | None, write: Callable[[dict], None], seconds: float | None = None) -> None:
        levels = saved.get("levels") if isinstance(saved, dict) else None
        self.saved: list[dict] = levels if isinstance(levels, list) else []
        self._write = write
        self.seconds = SNAPSHOT_SECONDS if seconds is None else seconds
        self._next = _clock() + self.seconds
        self._calls: dict[str, int] = {}
        self._open: list[Level] = []
        self.restored = 0       # runs restored from ``saved``

    def open(self, kind: str, like: torch.Tensor, names: tuple[str, ...]) -> Level:
        outer = self._open[-1] if self._open else None
        calls = self._calls if outer is None else outer.inner_calls
        ordinal = calls.get(kind, 0)
        calls[kind] = ordinal + 1
        shape, depth = tuple(like.shape), len(self._open)
        restored = None
        if depth < len(self.saved) and all(level.as_restored for level in self._open):
            restored = _tensors_of(self.saved[depth], kind, ordinal, shape, names, like.device)
            self.restored += restored is not None
        level = Level(self, kind, ordinal, shape, restored)
        self._open.append(level)
        return level

    def close(self, level: Level) -> None:
        if level in self._open:
            del self._open[self._open.index(level):]

    def due(self) -> bool:
        return _clock() >= self._next

    def write(self) -> None:
        """Write a snapshot of every open level, unless one of them holds no state yet."""
        if any(level.fields is None for level in self._open):
            return
        tick = _clock()
        self._write({"levels": [{"kind": level.kind, "ordinal": level.ordinal, "shape": list(level.shape),
                                 "tensors": level.tensors()} for level in self._open]})
        now = _clock()
        self._next = now + max(self.seconds, (now - tick) * WRITE_SPACING)


def _tensors_of(level: Any, kind: str, ordinal: int, shape: tuple[int, ...], names: tuple[str, ...],
                device: torch.device) -> dict[str, torch.Tensor] | None:
    """A saved level's tensors (on ``device``) if it is this run's: same kind, ordinal, shape and fields."""
    if not isinstance(level, dict) or (level.get("kind"), level.get("ordinal"), tuple(level.get("shape", ()))) != \
            (kind, ordinal, shape):
        return None
    tensors = level.get("tensors")
    if not isinstance(tensors, dict) or sorted(tensors) != sorted(names) or \
            not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        return None
    return {name: t.to(device) for name, t in tensors.items()}


_current: ContextVar[BatchSnapshots | None] = ContextVar("attack_batch_snapshots", default=None)


@contextlib.contextmanager
def tracking(saved: dict | None, write: Callable[[dict], None],
             seconds: float | None = None) -> Iterator[BatchSnapshots]:
    """Let the attacks run inside resume from ``saved`` (a snapshot ``write`` was given before, or
    None) and pass their new snapshots to ``write``."""
    batch = BatchSnapshots(saved, write, seconds)
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)


@contextlib.contextmanager
def resume(state_type: type[S], like: torch.Tensor, start: Callable[[], S], kind: str = "") -> Iterator[S]:
    """Open a run on the batch ``like`` (its input) whose state is a ``state_type``: the one it was
    snapshotted in where this very run was (its tensors on ``like``'s device), else ``start()``. The
    run is open, and its state goes into snapshots, inside the ``with`` block."""
    batch = _current.get()
    kind = kind or state_type.kind or state_type.__name__
    level = Level(None, kind, 0, tuple(like.shape), None) if batch is None else \
        batch.open(kind, like, state_type.names())
    try:
        state = start() if level.restored is None else state_type.restored(level.restored)
        state._level = level
        level.hold(state.fields_now())
        yield state
    finally:
        if batch is not None:
            batch.close(level)


@dataclasses.dataclass
class Parts(RunState):
    """An attack made of parts run one after another on the points still going (restarts, targets):
    between parts its state is the examples so far (``result``), which points are still going
    (``todo``: indices or a mask) and how many parts are finished. A part's own run may open a level
    inside it and resume in the middle.

        with parts("apgd-t", result, todo) as run:
            for part in run.each(count):
                ... run the part on run.todo, write into run.result, set run.todo ...
    """

    result: torch.Tensor
    todo: torch.Tensor
    parts_done: int = 0

    def each(self, count: int) -> Iterator[int]:
        """The part numbers from the first not finished; after each part the state is offered."""
        for part in range(self.parts_done, count):
            yield part
            self.parts_done = part + 1
            self.offer()


@contextlib.contextmanager
def parts(kind: str, result: torch.Tensor, todo: torch.Tensor) -> Iterator[Parts]:
    """A :class:`Parts` run named ``kind``; ``result`` (the caller's examples) holds the restored
    examples where the run resumes."""
    with resume(Parts, result, lambda: Parts(result, todo), kind=kind) as run:
        if run.result is not result:
            result.copy_(run.result)
            run.result = result
            run._level.hold(run.fields_now())  # type: ignore[union-attr]
        yield run
