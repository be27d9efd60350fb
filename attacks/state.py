"""What an evaluation has decided so far, kept in a state file for resuming (a :mod:`attacks.store`
JSON file): each point's verdict and the step that broke it, the points each step attacked, the
counts of every finished batch, the flags of the clean pass and the checks after the suite.

A sharded evaluation keeps one file per rank (:func:`rank_state_path`). On start, every file of
the evaluation is merged (:func:`state_family`), whatever number of processes wrote them: a point's
attacks depend only on its index, so each file holds a true prefix of every point's history, and
the merge keeps each point's furthest one. The counts are kept per batch, named by the batch's
first point, so that batches known to several files count once.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable

from . import provenance
from .errors import AttackError
from .results import AttackRecord
from .shard import Shard
from .store import Store, canonical

STORE = Store("state", version=1, encoding="json")
STATE_FIELDS = ("robust", "broken_by", "attacked", "batches", "flags", "clean_done", "clean_by", "checks")
BATCH_FIELDS = ("step", "first", "shard", "points", "broken", "invalid", "nonfinite", "forwards", "backwards",
                "seconds", "by")
KEY_WORDS = {"suite": "the suite", "steps": "the suite's attacks", "settings": "the attacks' settings", "eps": "eps",
             "norm": "the norm", "seed": "the seed", "n": "the number of points", "data": "the data",
             "bpda": "the BPDA stand-in", "precision": "the precision",
             "model": "the model's weights (another checkpoint, or trained further?)"}


def rank_state_path(base: Path, shard: Shard) -> Path:
    """The state file of one rank of a sharded evaluation whose unsharded state file is ``base``."""
    return base.with_suffix(f".rank{shard[0]}of{shard[1]}.json")


def state_family(base: Path) -> list[Path]:
    """Every state file of one evaluation: the unsharded one and those of each rank of any number of
    processes (an evaluation may resume with another number of processes than it started with)."""
    pattern = re.compile(re.escape(base.with_suffix("").name) + r"\.rank\d+of\d+\.json")
    siblings = sorted(p for p in base.parent.iterdir() if pattern.fullmatch(p.name)) if base.parent.is_dir() else []
    return ([base] if base.is_file() else []) + siblings


def read_state(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The state in ``path``, which must be of the evaluation ``key`` (the ranks' files differ only in
    their shard)."""
    found = STORE.read(path, None, STATE_FIELDS)
    if found.problem == "version":
        raise AttackError(f"'{path}' was written by another version of robust-kd and cannot be resumed from; "
                          "delete it to start over")
    if found.data is None or not _well_formed(found.data):
        raise AttackError(f"'{path}' is damaged ({found.error or 'ValueError'}) and cannot be resumed from; "
                          "delete it to start over")
    stored, wanted = found.data["key"], canonical(key)
    differ = [k for k in dict.fromkeys([*wanted, *stored]) if k != "shard" and stored.get(k) != wanted.get(k)]
    if differ:
        words = ", ".join(KEY_WORDS.get(k, k) for k in differ)
        raise AttackError(f"'{path}' holds the state of a different evaluation ({words} differ); "
                          "delete it to start over")
    return found.data


def _well_formed(data: dict[str, Any]) -> bool:
    lists = all(isinstance(data[name], list) for name in ("robust", "broken_by", "batches", "flags"))
    attacked = isinstance(data["attacked"], dict) and all(isinstance(v, list) for v in data["attacked"].values())
    batches = all(isinstance(b, dict) and all(k in b for k in BATCH_FIELDS) and isinstance(b["shard"], list)
                  and len(b["shard"]) == 2 for b in data["batches"]) if lists else False
    return lists and attacked and batches and isinstance(data["checks"], dict)


def _checks_well_formed(checks: Any) -> bool:
    """The checks after the suite, as a state file keeps them."""
    return isinstance(checks, dict) and bool(checks) and all(
        isinstance(c, dict) and isinstance(c.get("flags"), list) and all(isinstance(f, dict) for f in c["flags"])
        for c in checks.values()) and ("convergence" not in checks or "result" in checks["convergence"])


def merge_batches(lists: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The batches of several states, each once (a batch of a step is named by its first point: each
    point is attacked once per step)."""
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for batches in lists:
        for batch in batches:
            merged.setdefault((batch["step"], batch["first"]), batch)
    return list(merged.values())


def step_record(label: str, settings: dict[str, Any], batches: list[dict[str, Any]]) -> AttackRecord:
    """A step's counts from its batches. Its time is the slowest rank's, summed over the runs
    (numbers of processes) that took part."""
    mine = [b for b in batches if b["step"] == label]
    per_rank: dict[tuple[int, int], float] = {}
    for b in mine:
        rank, world = b["shard"]
        per_rank[(rank, world)] = per_rank.get((rank, world), 0.0) + b["seconds"]
    slowest: dict[int, float] = {}
    for (_, world), seconds in per_rank.items():
        slowest[world] = max(slowest.get(world, 0.0), seconds)
    return AttackRecord(label, settings, points_attacked=sum(b["points"] for b in mine),
                        points_broken=sum(b["broken"] for b in mine), invalid_examples=sum(b["invalid"] for b in mine),
                        nonfinite_outputs=sum(b["nonfinite"] for b in mine),
                        forwards=sum(b["forwards"] for b in mine), backwards=sum(b["backwards"] for b in mine),
                        seconds=sum(slowest.values()))


def robust_after(broken_by: list[str | None], steps_so_far: set[str]) -> int:
    """The points still robust after the steps ``steps_so_far``: from each point's verdict, not from
    the state now, since a resumed evaluation may already hold the verdicts of the steps after them."""
    return sum(1 for b in broken_by if b is None or (b != "clean" and b not in steps_so_far))


class EvaluationState:
    """What an evaluation has decided so far; saved (``path``) as JSON for resuming, merged on start
    from every file of the evaluation (``family``)."""

    def __init__(self, path: Path | None, key: dict[str, Any], family: list[Path] | None = None) -> None:
        self.path, self.key = path, key
        self.robust: list[bool] = []
        self.broken_by: list[str | None] = []
        self.attacked: dict[str, list[int]] = {}
        self.batches: list[dict[str, Any]] = []
        self.flags: list[dict[str, Any]] = []
        self.checks: dict[str, Any] = {}   # the checks after the suite: {name: {"flags": [...], ...}}
        self.clean_done = False
        self.clean_by: str | None = None   # the versions of the clean pass
        self.adopted = False
        self.seconds_now = 0.0      # attack time of this process's own batches in this run
        self.last_save = 0.0
        found = [(p, read_state(p, key)) for p in family or [] if p.is_file()]
        n = key["n"]
        states = [d for _, d in found if d["clean_done"] and len(d["robust"]) == n == len(d["broken_by"])]
        if states:
            self._merge(states)
            self.adopted = [p for p, _ in found] != [path]     # it knows more than its own file holds

    def _merge(self, states: list[dict[str, Any]]) -> None:
        n = self.key["n"]
        self.robust = [all(d["robust"][i] for d in states) for i in range(n)]
        self.broken_by = [next((d["broken_by"][i] for d in states if d["broken_by"][i] is not None), None)
                          for i in range(n)]
        labels = dict.fromkeys(label for d in states for label in d["attacked"])
        self.attacked = {label: sorted({i for d in states for i in d["attacked"].get(label, [])}) for label in labels}
        self.batches = merge_batches(d["batches"] for d in states)
        self.flags = states[0]["flags"]
        self.checks = next((d["checks"] for d in states if _checks_well_formed(d["checks"])), {})
        self.clean_done = True
        self.clean_by = next((d["clean_by"] for d in states if isinstance(d["clean_by"], str)), None)

    def add_batch(self, step: str, rows: list[int], shard: Shard, earlier_seconds: float = 0.0, **counts: Any) -> None:
        """``earlier_seconds``: the part of the batch's seconds spent by an earlier run (resumed from a
        snapshot of the batch, :mod:`attacks.inflight`)."""
        self.batches.append({"step": step, "first": rows[0], "shard": list(shard), **counts,
                             "by": provenance.computed_by()})
        self.seconds_now += counts.get("seconds", 0.0) - earlier_seconds
        self.attacked.setdefault(step, []).extend(rows)

    def keep_check(self, name: str, outcome: dict[str, Any]) -> None:
        """Keep a check's outcome, as JSON gives it back (a rerun then returns the very same values)."""
        self.checks[name] = json.loads(json.dumps({**outcome, "by": provenance.computed_by()}, default=str))
        self.save(force=True)

    def computed_by(self) -> list[str]:
        """Every distinct set of versions that computed part of this evaluation."""
        found = [self.clean_by, *(b.get("by") for b in self.batches), *(c.get("by") for c in self.checks.values())]
        return sorted({v for v in found if isinstance(v, str)})

    def save(self, force: bool = False) -> None:
        if self.path is None or (not force and time.monotonic() - self.last_save < 2.0):
            return
        STORE.write(self.path, self.key, {
            "robust": self.robust, "broken_by": self.broken_by, "attacked": self.attacked, "batches": self.batches,
            "flags": self.flags, "clean_done": self.clean_done, "clean_by": self.clean_by, "checks": self.checks})
        self.last_save = time.monotonic()
