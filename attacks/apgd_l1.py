"""APGD in L1 (Croce and Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image
classifiers", ICML 2021), as AutoAttack's L1 version runs it.

Per point: the step moves along the sign of the gradient's largest coordinates only (the top
share ``topk`` of them, 20% at first), with L1 length η, then projects onto the L1 ball inside the
box (:func:`attacks.l1.project_l1`); there is no momentum. Every max(⌊0.04·steps⌋, 1) steps a
checkpoint counts the nonzero coordinates of the best point so far: where they fell below 95% of
the last count, η is reset to eps and the iterate goes back to the best point, otherwise η is divided
by 1.5 (kept within [eps/10, eps]); ``topk`` becomes that count / 1.5 of the coordinates.

With ``shrinking_eps`` (AutoAttack's ``use_largereps``), the steps are split 30/30/40% over the
radii 3·eps, 2·eps and eps, each stage starting from the previous one's highest-loss point projected
onto its ball; only the last stage's iterates can break a point. As in :mod:`attacks.apgd`, a point
leaves as soon as it is misclassified within eps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import inflight
from .l1 import project_l1
from .rng import point_normal

RESET_SHARE, STEP_DIVISOR, SMALLEST_STEP = 0.95, 1.5, 10.0


def stages(eps: float, steps: int, shrinking: bool) -> list[tuple[float, int]]:
    """(radius, steps) of each stage."""
    if not shrinking:
        return [(eps, steps)]
    first = math.ceil(0.3 * steps)
    return [(3.0 * eps, first), (2.0 * eps, first), (eps, steps - 2 * first)]


@dataclass
class L1Run(inflight.RunState):
    """An L1 APGD run in the middle of its steps; every tensor is per point (row)."""

    kind = "apgd l1 run"
    result: torch.Tensor       # a broken point's first misclassified iterate within eps
    broken: torch.Tensor
    x_adv: torch.Tensor
    active: torch.Tensor
    size: torch.Tensor         # η
    best_x: torch.Tensor       # the highest-loss point of this stage, its gradient and loss
    best_grad: torch.Tensor
    best_loss: torch.Tensor
    grad_all: torch.Tensor
    topk: torch.Tensor         # the share of coordinates a step moves
    counted: torch.Tensor      # the best point's nonzero coordinates at the last checkpoint
    stage: int = 0
    step: int = 0
    since_check: int = 0


def _onto_ball(x: torch.Tensor, point: torch.Tensor, delta: torch.Tensor, radius: float) -> torch.Tensor:
    """``point`` (= x + delta) moved onto the L1 ball ∩ box: point + (projected delta − delta). Written as the
    reference adds its correction, so that a pixel the projection returns to x_i differs from it by the same
    rounding, and the nonzero counts of the checkpoints (and so every step after them) are the reference's."""
    return point + (project_l1(x, delta, radius) - delta)


def _nonzero(delta: torch.Tensor) -> torch.Tensor:
    return (delta != 0).flatten(1).sum(dim=1).to(delta.dtype)


def _begin_stage(problem, run: L1Run, radius: float, start: torch.Tensor, final: bool, fresh: bool) -> None:
    """A stage from ``start`` (projected onto its ball unless ``fresh``): η = radius, the best point the start;
    ``fresh``: the run of an attack without stages (topk 20%), else topk from the start's nonzero coordinates."""
    x = problem.x
    run.x_adv = (start if fresh else _onto_ball(x, start, start - x, radius)).clamp(0.0, 1.0)
    values, logits, grad = problem.evaluate(run.x_adv[run.active], run.active)
    run.grad_all = torch.zeros_like(x)
    run.grad_all[run.active] = grad
    run.best_x, run.best_grad = run.x_adv.clone(), run.grad_all.clone()
    run.best_loss = torch.full((x.shape[0],), -torch.inf, dtype=torch.float32, device=x.device)
    run.best_loss[run.active] = values
    run.size = torch.full((x.shape[0],), radius, dtype=x.dtype, device=x.device)
    features = x[0].numel()
    run.counted = torch.full_like(run.size, float(features)) if fresh else _nonzero(run.x_adv - x)
    run.topk = torch.full_like(run.size, 0.2) if fresh else run.counted / features / STEP_DIVISOR
    run.since_check = 0
    if final:
        problem.retire(run, logits.argmax(1) != problem.y[run.active])


def _start(problem, plan, seed: int, stream) -> L1Run:
    x = problem.x
    n = x.shape[0]
    noise = point_normal(problem.index, tuple(x.shape[1:]), seed, stream, x.dtype).to(x.device)
    run = L1Run(result=x.clone(), broken=torch.zeros(n, dtype=torch.bool, device=x.device), x_adv=x,
                active=torch.arange(n, device=x.device), size=x.new_zeros(n), best_x=x, best_grad=x, best_loss=x,
                grad_all=x, topk=x.new_zeros(n), counted=x.new_zeros(n))
    # as the reference: x + t + correction(t); with stages, from x + t projected here and again as the stage begins
    start = x + noise
    first = _onto_ball(x, start, noise if len(plan) == 1 else start - x, plan[0][0])
    _begin_stage(problem, run, plan[0][0], first, len(plan) == 1, fresh=len(plan) == 1)
    return run


def _step(problem, run: L1Run, radius: float, final: bool) -> None:
    """One step on the active points: the sparse signed step, the projection, the new loss and best point."""
    active = run.active
    view = (-1,) + (1,) * (problem.x.dim() - 1)
    xa, xx, g = run.x_adv[active], problem.x[active], run.grad_all[active]
    features = g[0].numel()
    ordered = g.abs().flatten(1).sort(dim=1).values
    at = ((1.0 - run.topk[active]) * features).clamp(0, features - 1).long()
    threshold = ordered.gather(1, at[:, None]).view(view)
    direction = (g * (g.abs() >= threshold).to(g.dtype)).sign()
    moved = xa + run.size[active].view(view) * direction / (direction.abs().flatten(1).sum(dim=1).view(view) + 1e-10)
    moved = _onto_ball(xx, xx + (moved - xx), moved - xx, radius)
    run.x_adv[active] = moved
    values, logits, grad = problem.evaluate(moved, active)
    run.grad_all[active] = grad
    better = values > run.best_loss[active]
    run.best_x[active] = torch.where(better.view(view), moved, run.best_x[active])
    run.best_grad[active] = torch.where(better.view(view), grad, run.best_grad[active])
    run.best_loss[active] = torch.where(better, values, run.best_loss[active])
    if final:
        problem.retire(run, logits.argmax(1) != problem.y[active])


def _checkpoint(problem, run: L1Run, radius: float) -> None:
    view = (-1,) + (1,) * (problem.x.dim() - 1)
    count = _nonzero(run.best_x - problem.x)
    sparser = count / run.counted < RESET_SHARE
    run.topk = count / problem.x[0].numel() / STEP_DIVISOR
    run.size = torch.where(sparser, torch.full_like(run.size, radius), run.size / STEP_DIVISOR)
    run.size = run.size.clamp(radius / SMALLEST_STEP, radius)
    run.counted = count
    run.x_adv = torch.where(sparser.view(view), run.best_x, run.x_adv)
    run.grad_all = torch.where(sparser.view(view), run.best_grad, run.grad_all)
    run.since_check = 0


def apgd_l1(problem, *, steps: int, seed: int, stream, shrinking: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One L1 APGD run on ``problem`` (an :class:`attacks.apgd.APGDProblem`); returns (x_adv, broken)."""
    plan = stages(problem.eps, steps, shrinking)
    ends = [sum(n for _, n in plan[:k + 1]) for k in range(len(plan))]
    with inflight.resume(L1Run, problem.x, lambda: _start(problem, plan, seed, stream)) as run:
        for i in run.steps(ends[-1]):
            if run.active.numel() == 0:
                break
            if i == ends[run.stage]:          # the next radius, from this stage's highest-loss point
                run.stage += 1
                _begin_stage(problem, run, plan[run.stage][0], run.best_x, run.stage == len(plan) - 1, fresh=False)
                if run.active.numel() == 0:
                    break
            radius, count = plan[run.stage]
            _step(problem, run, radius, run.stage == len(plan) - 1)
            run.since_check += 1
            if run.since_check == max(int(0.04 * count), 1):
                _checkpoint(problem, run, radius)
        run.result[run.active] = run.x_adv[run.active]
    return run.result, run.broken
