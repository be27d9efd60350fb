"""How far the attack in flight has got, as a share of its batch's work: for progress displays.

An attack's loops say where they are (``advance(done, total)`` per step, ``part(i, n)`` around the
i-th of n runs, e.g. restarts or targets); an evaluation reads the share about once a second, in
the forward passes of its heartbeat. Outside :func:`tracking` every call is a no-op.

The share counts the work an attack would do if no point broke early, so it is a lower bound of
how far the batch has really got, and a time left estimated from it is an upper bound. ``done``
may be a zero-argument callable, evaluated only when the share is read: an attack whose progress
lives in device tensors then pays no host sync for it on the steps between two readings.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator, Union

Done = Union[int, float, Callable[[], float]]


class WorkShare:
    """The share of the current batch's work done, in [0, 1]."""

    def __init__(self) -> None:
        self.span = (0.0, 1.0)
        self._floor = 0.0
        self._done: Done = 0
        self._total = 1.0

    def set(self, done: Done, total: float) -> None:
        self._done, self._total = done, float(max(total, 1))

    def read(self) -> float:
        done = self._done() if callable(self._done) else self._done
        low, high = self.span
        share = low + (high - low) * min(max(float(done) / self._total, 0.0), 1.0)
        self._floor = max(self._floor, share)   # never goes back (a nested run starting anew)
        return self._floor

    def finish_span(self) -> None:
        self._floor = max(self._floor, self.span[1])
        self._done, self._total = 0, 1.0


_current: ContextVar[WorkShare | None] = ContextVar("attack_work_share", default=None)


@contextlib.contextmanager
def tracking() -> Iterator[WorkShare]:
    """Track the work of the attacks run inside; yields the share to read."""
    share = WorkShare()
    token = _current.set(share)
    try:
        yield share
    finally:
        _current.reset(token)


def advance(done: Done, total: float) -> None:
    """``done`` of ``total`` equal units of the current run (or part) are finished."""
    share = _current.get()
    if share is not None:
        share.set(done, total)


@contextlib.contextmanager
def part(i: int, n: int) -> Iterator[None]:
    """Run the block as the i-th of n equal parts of the current run."""
    share = _current.get()
    if share is None:
        yield
        return
    outer = share.span
    width = (outer[1] - outer[0]) / max(n, 1)
    share.span = (outer[0] + width * i, outer[0] + width * (i + 1))
    share.set(0, 1)
    try:
        yield
    finally:
        share.finish_span()
        share.span = outer
