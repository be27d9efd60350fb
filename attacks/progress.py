"""What an evaluation tells its caller as it goes: the :class:`Progress` protocol, a heartbeat from
the forward passes of the batch in flight, and the filling-in of what a progress object lacks."""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Protocol, Sequence

from .core import CountingModel
from .results import AttackRecord

HEARTBEAT_SECONDS = 1.0
PROGRESS_METHODS = ("attack_started", "points_done", "attack_finished")


class Progress(Protocol):
    """What an evaluation reports as it goes. A progress object may also have
    ``working(label, done, in_flight, forwards, robust, total, share, seconds)``: called about once a
    second while a batch of ``in_flight`` points is attacked (``forwards``: images passed forward in
    it so far; ``share``: the share of the batch's work done, a lower bound since points that break
    early cut it short (:mod:`attacks.work`); ``seconds``: time spent on the batch so far), and
    ``notify(text)``: a line for the user (a snapshot that could not be read; without ``notify`` it
    is a warning). Any method it lacks is taken as doing nothing."""

    def attack_started(self, label: str, points: int) -> None: ...
    def points_done(self, label: str, done: int, robust: int, total: int) -> None: ...
    def attack_finished(self, record: AttackRecord, robust: int, total: int) -> None: ...


class CompletedProgress:
    """A progress object (or None) with the reporting methods it lacks filled in as doing nothing, so
    that one with only ``points_done`` (say) is enough."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name, None)
        if found is not None:
            return found
        if name in PROGRESS_METHODS:
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def say(progress: Any, text: str) -> None:
    """A line for the user: to the progress's ``notify``, else as a warning."""
    notify = getattr(progress, "notify", None)
    if callable(notify):
        notify(text)
    else:
        warnings.warn(text, stacklevel=5)


class _Heartbeat:
    """Calls ``report`` at most once per ``HEARTBEAT_SECONDS`` from the forward passes of a batch."""

    def __init__(self, report: Callable[[], None]) -> None:
        self.report, self.last = report, time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= HEARTBEAT_SECONDS:
            self.last = now
            self.report()


@contextmanager
def heartbeat(counters: Sequence[CountingModel], report: Callable[[], None] | None) -> Iterator[None]:
    """While inside: ``report()`` about once a second, from the forward passes of ``counters``
    (nothing when ``report`` is None)."""
    if report is None:
        yield
        return
    beat = _Heartbeat(report)
    for counter in counters:
        counter.listener = beat
    try:
        yield
    finally:
        for counter in counters:
            counter.listener = None
