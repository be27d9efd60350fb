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
(benchmarks/attack_targets.py: APGD-T 1.49× faster on 4 points of a ResNet-18); the CUDA value is
a starting point, not yet measured.
"""

from __future__ import annotations

from typing import Callable

import torch

from . import inflight, work
from .errors import AttackError

AUTO_ROWS_PER_PASS = {"cpu": 36, "cuda": 4096}

# run(x, y, index, target, k, restart, group) -> (x_adv, broken); k is one number or one per row
TargetRun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, "int | torch.Tensor", int,
                      "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]


def check_rows_per_pass(attack: str, rows: int) -> None:
    if rows < 0:
        raise AttackError(f"{attack}: rows_per_pass must be 0 (by device) or a number of rows, got {rows}")


def attack_targets(run: TargetRun, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, order: torch.Tensor,
                   ks: list[int], restarts: int, rows_per_pass: int, keep_robust: bool, kind: str = "targets") -> torch.Tensor:
    """Run towards the k-th highest class of ``order`` (the clean logits' argsort) for each k in
    ``ks``, on the points still robust. ``keep_robust``: a robust point takes the last run's
    iterate (else it keeps its clean image). An interrupted evaluation resumes after the last
    finished run (:mod:`attacks.inflight`, as ``kind``), and inside the run in flight where ``run``
    opens a level of its own (APGD and FAB do)."""
    rows = rows_per_pass or AUTO_ROWS_PER_PASS.get(x.device.type, 1)
    result = x.clone()
    side_by_side = len(ks) > 1 and x.shape[0] * len(ks) <= rows    # one at a time would leave passes part-empty
    # the arrangement names the parts (side by side: one per restart; in order: one per target and
    # restart): a snapshot of the other one, e.g. made on another device, is not taken for this one
    arrangement = f"side by side x{restarts}" if side_by_side else f"in order x{len(ks) * restarts}"
    with inflight.Parts(f"{kind} ({arrangement})", result, torch.arange(x.shape[0], device=x.device)) as parts:
        _run_parts(run, parts, result, x, y, index, order, ks, restarts, side_by_side, keep_robust)
    return result


def _run_parts(run: TargetRun, parts: inflight.Parts, result: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
               index: torch.Tensor, order: torch.Tensor, ks: list[int], restarts: int, side_by_side: bool,
               keep_robust: bool) -> None:
    todo = parts.todo

    def keep(points: torch.Tensor, x_adv: torch.Tensor, broken: torch.Tensor) -> None:
        written = torch.ones_like(broken) if keep_robust else broken
        result[points[written]] = x_adv[written]

    if side_by_side:
        for restart in range(restarts):
            if todo.numel() == 0:
                return
            if parts.finished_before(restart):
                continue
            with work.part(restart, restarts):
                x_adv, broken = _side_by_side(run, x[todo], y[todo], index[todo], order[todo], ks, restart)
            keep(todo, x_adv, broken)
            todo = todo[~broken]
            parts.finish(restart, todo)
        return
    for j, k in enumerate(ks):
        for restart in range(restarts):
            if todo.numel() == 0:
                return
            part = j * restarts + restart
            if parts.finished_before(part):
                continue
            with work.part(part, len(ks) * restarts):
                x_adv, broken = run(x[todo], y[todo], index[todo], order[todo, -k], k, restart, None)
            keep(todo, x_adv, broken)
            todo = todo[~broken]
            parts.finish(part, todo)


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


def retire_groups(going: torch.Tensor, active: torch.Tensor, done: torch.Tensor, group: torch.Tensor | None) -> torch.Tensor:
    """``going`` (over the active rows) without the rows whose point another row just broke
    (``done``, a mask over the active rows). No host sync: a count per group (the ids are point
    positions, below ``group.numel()``), not ``isin``, which sorts and finds uniques on long inputs."""
    if group is None:
        return going
    groups = group[active]
    hits = torch.zeros(group.numel(), dtype=torch.int32, device=group.device)
    hits.index_add_(0, groups, done.to(torch.int32))
    return going & (hits[groups] == 0)
