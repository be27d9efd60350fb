"""Targeted attacks over several target classes (APGD-T, FAB-T): one target after another, as the
reference runs them, or all targets of a point side by side in one batch.

A run towards one target is a per-point computation whose randomness is tied to the point, the
target and the restart (:mod:`attacks.rng`), so it is the same run in either arrangement, and a
point is broken if any run breaks it. Side by side, a point's runs stop together at its first
misclassified iterate under any target (the ``group`` argument of a run): the verdicts are the
sequential ones in a ninth of the passes. A broken point may then keep the example of another
target than the sequential order would have found first.

Side by side pays where one target's pass leaves a device part-empty: the targets run side by
side when all of them, for all points left, fit in one pass of ``rows_per_pass`` rows. A 2-core
CPU's throughput stops growing near 36 images per pass, so there this means at most 4 points
(benchmarks/attack_targets.py: APGD-T 1.49× faster on 4 points of a ResNet-18); on CUDA the value
is a ceiling, under the cap an evaluation measures from the free memory (:mod:`attacks.memory`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import inflight, memory, work
from .errors import AttackError

AUTO_ROWS_PER_PASS = memory.TARGET_ROWS

# run(x, y, index, target, k, restart, group) -> (x_adv, broken); k is one number or one per row
TargetRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "int | torch.Tensor", int,
                      "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]


def check_rows_per_pass(attack: str, rows: int) -> None:
    if rows < 0:
        raise AttackError(f"{attack}: rows_per_pass must be 0 (by device) or a number of rows, got {rows}")


@dataclass(frozen=True)
class TargetPlan:
    """Which targets a targeted attack runs towards and how: the k-th highest class of the clean
    logits for each k in ``ks``, ``restarts`` runs each, side by side where ``rows_per_pass`` (0: by
    device) allows. ``keep_robust``: a robust point takes the last run's iterate (else it keeps its
    clean image). ``kind`` names the attack in snapshots."""

    ks: list[int]
    restarts: int
    rows_per_pass: int
    keep_robust: bool
    kind: str = "targets"


def attack_targets(run: TargetRun, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, order: torch.Tensor,
                   plan: TargetPlan) -> torch.Tensor:
    """Run towards each target of ``plan`` (``order``: the clean logits' argsort) on the points still
    robust. An interrupted evaluation resumes after the last finished run (:mod:`attacks.inflight`,
    as ``plan.kind``), and inside the run in flight where ``run`` opens a level of its own (APGD and
    FAB do)."""
    ks, restarts = plan.ks, plan.restarts
    rows = plan.rows_per_pass or memory.rows_per_pass(x.device, AUTO_ROWS_PER_PASS, 1)
    result = x.clone()
    side_by_side = len(ks) > 1 and x.shape[0] * len(ks) <= rows    # one at a time would leave passes part-empty
    # the arrangement names the parts (side by side: one per restart; in order: one per target and
    # restart): a snapshot of the other one, e.g. made on another device, is not taken for this one
    arrangement = f"side by side x{restarts}" if side_by_side else f"in order x{len(ks) * restarts}"
    with inflight.parts(f"{plan.kind} ({arrangement})", result, torch.arange(x.shape[0], device=x.device)) as parts:
        targets = _Targets(run, x, y, index, order, ks, plan.keep_robust)
        if side_by_side:
            targets.side_by_side(parts, restarts)
        else:
            targets.in_order(parts, restarts)
    return result


class _Targets:
    """The runs towards each target of ``ks`` on the points of ``parts.todo``, one part at a time."""

    def __init__(self, run: TargetRun, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, order: torch.Tensor,
                 ks: list[int], keep_robust: bool) -> None:
        self.run, self.x, self.y, self.index, self.order, self.ks = run, x, y, index, order, ks
        self.keep_robust = keep_robust

    def keep(self, parts: inflight.Parts, points: torch.Tensor, x_adv: torch.Tensor, broken: torch.Tensor) -> None:
        written = torch.ones_like(broken) if self.keep_robust else broken
        parts.result[points[written]] = x_adv[written]
        parts.todo = points[~broken]

    def side_by_side(self, parts: inflight.Parts, restarts: int) -> None:
        for restart in parts.each(restarts):
            todo = parts.todo
            if todo.numel() == 0:
                return
            with work.part(restart, restarts):
                x_adv, broken = _side_by_side(self.run, self.x[todo], self.y[todo], self.index[todo],
                                              self.order[todo], self.ks, restart)
            self.keep(parts, todo, x_adv, broken)

    def in_order(self, parts: inflight.Parts, restarts: int) -> None:
        count = len(self.ks) * restarts
        for part in parts.each(count):
            todo = parts.todo
            if todo.numel() == 0:
                return
            k, restart = self.ks[part // restarts], part % restarts
            with work.part(part, count):
                x_adv, broken = self.run(self.x[todo], self.y[todo], self.index[todo], self.order[todo, -k], k,
                                         restart, None)
            self.keep(parts, todo, x_adv, broken)


def _side_by_side(run: TargetRun, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, order: torch.Tensor,
                  ks: list[int], restart: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All targets of these points in one run: row t·n + p is point p towards target ks[t]."""
    n, t = x.shape[0], len(ks)
    k_rows = torch.tensor(ks, device=x.device).repeat_interleave(n)
    target = torch.cat([order[:, -k] for k in ks])
    x_adv, broken = run(x.repeat(t, *([1] * (x.dim() - 1))), y.repeat(t), index.repeat(t), target, k_rows, restart,
                        torch.arange(n, device=x.device).repeat(t))
    broken = broken.view(t, n)
    hit = broken.any(0)
    # a broken point keeps its first broken target's example, a robust one the last target's
    chosen = torch.where(hit, broken.long().argmax(0), torch.full_like(hit, t - 1, dtype=torch.long))
    return x_adv.view(t, n, *x.shape[1:])[chosen, torch.arange(n, device=x.device)], hit


def retire_groups(going: torch.Tensor, active: torch.Tensor, done: torch.Tensor,
                  group: torch.Tensor | None) -> torch.Tensor:
    """``going`` (over the active rows) without the rows whose point another row just broke
    (``done``, a mask over the active rows). No host sync: a count per group (the ids are point
    positions, below ``group.numel()``), not ``isin``, which sorts and finds uniques on long inputs."""
    if group is None:
        return going
    groups = group[active]
    hits = torch.zeros(group.numel(), dtype=torch.int32, device=group.device)
    hits.index_add_(0, groups, done.to(torch.int32))
    return going & (hits[groups] == 0)
