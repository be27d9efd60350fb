"""Where an evaluation keeps the last snapshot of its batch in flight (:mod:`attacks.inflight`).

One file beside the state file (``<state>.inflight.pt``, a :mod:`attacks.store` file), removed once
its batch is finished: the state file then holds the batch's verdicts. A snapshot of another
evaluation (its key differs) is ignored and replaced; a damaged one, or one of another version, too,
and ``damaged`` says so: only a shortcut is lost, the batch starts over.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

from . import inflight
from .store import Store

STORE = Store("snapshot", version=1, encoding="torch")
FIELDS = ("step", "rows", "forwards", "backwards", "seconds", "snapshot")
Counts = Callable[[], "tuple[int, int, float]"]   # the batch's forwards, backwards and seconds so far


class SnapshotFile:
    def __init__(self, state_path: Path | None, key: dict[str, Any]) -> None:
        self.path = None if state_path is None else state_path.with_suffix(".inflight.pt")
        self.key = key
        self.damaged: str | None = None     # why a snapshot found could not be used
        self.present = self.path is not None and self.path.is_file()   # a file to remove once a batch is done
        self.saved = self._load()

    def _load(self) -> dict[str, Any] | None:
        if not self.present:
            return None
        assert self.path is not None
        found = STORE.read(self.path, self.key, FIELDS)
        if found.problem == "version":
            self.damaged = (f"'{self.path}' was written by another version of robust-kd: the batch it was made in "
                            "starts over")
        elif found.problem == "damaged" or (found.data is not None and not _well_formed(found.data)):
            self.damaged = (f"'{self.path}' is damaged ({found.error or 'ValueError'}): the batch it was made in "
                            "starts over")
        else:
            return found.data
        return None

    def reload(self) -> None:
        """Read the file again: a batch attacked again in this process resumes from its latest snapshot."""
        self.present = self.path is not None and self.path.is_file()
        self.saved = self._load()

    def for_batch(self, step: str, rows: list[int]) -> dict[str, Any] | None:
        """The saved snapshot if it is one of this batch (same attack, same points)."""
        saved = self.saved
        return saved if saved is not None and saved["step"] == step and saved["rows"] == rows else None

    def tracking(self, step: str, rows: list[int], counts: Counts,
                 before: Callable[[], None] = lambda: None) -> contextlib.AbstractContextManager:
        """The attacks run inside resume from this batch's snapshot, if saved, and write theirs
        (after calling ``before``, with the batch's ``counts()``); without a state file nothing is
        snapshotted."""
        if self.path is None:
            return contextlib.nullcontext()
        saved = self.for_batch(step, rows)
        return inflight.tracking(None if saved is None else saved["snapshot"], self._writer(step, rows, counts, before))

    def _writer(self, step: str, rows: list[int], counts: Counts, before: Callable[[], None]) -> Callable[[dict], None]:
        def write(snapshot: dict) -> None:
            assert self.path is not None
            before()
            forwards, backwards, seconds = counts()
            STORE.write(self.path, self.key, {"step": step, "rows": rows, "forwards": int(forwards),
                                              "backwards": int(backwards), "seconds": float(seconds),
                                              "snapshot": snapshot})
            self.present = True
        return write

    def clear(self) -> None:
        """The batch in flight is finished (or was another one): its snapshot is no longer needed."""
        self.saved = None
        if self.present:
            assert self.path is not None
            self.path.unlink(missing_ok=True)
            self.present = False


def _well_formed(data: dict[str, Any]) -> bool:
    return isinstance(data["snapshot"], dict) and isinstance(data["snapshot"].get("levels"), list) and \
        isinstance(data["rows"], list)
