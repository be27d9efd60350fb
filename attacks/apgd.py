"""APGD-CE and APGD-T: step-size-free PGD of Croce and Hein, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020.

Per point: step size η starts at 2·eps; the update mixes the projected step with the previous move
(momentum 0.75); at checkpoints w_j (p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06),
in fractions of the iterations) η is halved and the iterate reset to the best point whenever fewer
than ρ = 0.75 of the steps since the last checkpoint raised the loss, or when neither η nor the
best loss changed. APGD-T maximises the targeted DLR loss towards each of the top-k other classes
of the clean logits in turn, on the points still robust.

Unlike the reference code, a point leaves the computation as soon as it is misclassified (and
keeps that iterate); the other points' trajectories are unchanged, since every quantity is per point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import inflight, verdict, work
from .apgd_l1 import apgd_l1
from .core import AUTOATTACK_NORMS, Attack, dlr_loss, flat_norm, targeted_dlr_loss
from .rng import point_normal, point_uniform
from .suites import register_attack
from .targets import TargetPlan, attack_targets, check_rows_per_pass, retire_groups

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

def _checkpoint_gaps(steps: int) -> tuple[int, int, int]:
    """(first interval, minimum interval, decrement), as in the reference implementation."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """The eps-ball ∩ [0, 1] projection written as the reference writes it, so that float rounding,
    and with it every sign of the gradient downstream, is the same (Linf: min/max against x ± eps;
    L2: x + eps-capped length along the unit direction)."""
    if norm == "Linf":
        return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    delta = x_adv - x
    length = flat_norm(delta, "L2").view(-1, *([1] * (x.dim() - 1)))
    return (x + delta / (length + 1e-12) * torch.clamp(length, max=eps)).clamp(0.0, 1.0)


def boundary_start(x: torch.Tensor, index: torch.Tensor, eps: float, norm: str, seed: int, stream: int) -> torch.Tensor:
    """APGD's start: a random direction scaled to norm eps (Linf: max-normalised uniform noise)."""
    shape = tuple(x.shape[1:])
    view = (-1,) + (1,) * len(shape)
    if norm == "Linf":
        t = (2 * point_uniform(index, shape, seed, stream, x.dtype) - 1).to(x.device)
        t = t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(view)
    else:
        t = point_normal(index, shape, seed, stream, x.dtype).to(x.device)
        t = t / flat_norm(t, "L2").clamp_min(1e-12).view(view)
    return (x + eps * t).clamp(0.0, 1.0)


@dataclass
class APGDRun(inflight.RunState):
    """One APGD run in the middle of its steps. Every tensor is per point (row)."""

    kind = "apgd run"
    result: torch.Tensor            # the examples: a broken point's first misclassified iterate
    broken: torch.Tensor            # which points broke (a mask)
    x_adv: torch.Tensor             # the iterate
    active: torch.Tensor            # the rows still going
    size: torch.Tensor              # the step size η
    best_x: torch.Tensor            # the point of the highest loss so far, its gradient and its loss
    best_grad: torch.Tensor
    best_loss: torch.Tensor
    previous: torch.Tensor          # the iterate before the last step (for the momentum)
    history: torch.Tensor           # history[i + 1]: the loss after step i
    best_at_check: torch.Tensor     # the best loss at the last checkpoint
    reduced_at_check: torch.Tensor  # whether η was halved there
    grad_all: torch.Tensor          # the gradient at the iterate
    step: int = 0
    gap: int = 0                    # the steps between the last checkpoint and the next
    since_check: int = 0            # the steps since the last checkpoint


@dataclass
class APGDProblem:
    """What one APGD run maximises, and where: ``loss(logits, y, target)`` per row of ``x`` (the points
    ``index``) in the ``norm`` ball of radius ``eps``; ``group``: rows that are runs on one point
    (:mod:`attacks.targets`)."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    loss: Loss
    target: torch.Tensor
    eps: float
    norm: str
    group: torch.Tensor | None = None
    shrinking_eps: bool = False   # L1: the steps over 3·eps, 2·eps, eps (attacks.apgd_l1)
    eot: int = 1        # passes whose gradients are averaged (a randomised model: EOT, as AutoAttack's eot_iter)

    def evaluate(self, points: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, gradient of the loss) at ``points``, the iterates of ``rows``; with ``eot`` > 1 the
        gradient is the mean over that many passes and the loss and logits are the last pass's, as the reference."""
        points = points.detach().requires_grad_(True)
        total = None
        for _ in range(self.eot):
            logits = self.model(points)
            values = self.loss(logits.float(), self.y[rows], self.target[rows])
            (grad,) = torch.autograd.grad(values.sum(), points)
            total = grad if total is None else total + grad
        if self.eot > 1:
            total = total / float(self.eot)
        return values.detach(), logits.detach(), total.detach()

    def retire(self, run: APGDRun, wrong: torch.Tensor) -> None:
        """Record the active points misclassified at their current iterate, as the evaluation's judge
        confirms (:mod:`attacks.verdict`); they leave ``run.active``. Masks over the active rows are applied
        with torch.where, not by boolean indexing: a boolean index is a nonzero, a host sync on CUDA. One sync
        per step is left, the one that shrinks ``active`` (and one where the judge checks a pass of its own)."""
        view = (-1,) + (1,) * (self.x.dim() - 1)
        active = run.active
        wrong = verdict.retire(self.model, run.x_adv[active], self.y[active], self.index[active], wrong)
        run.result[active] = torch.where(wrong.view(view), run.x_adv[active], run.result[active])
        run.broken[active] |= wrong
        run.active = active[retire_groups(~wrong, active, wrong, self.group)]


def _start(problem: APGDProblem, steps: int, seed: int, stream: int | torch.Tensor) -> APGDRun:
    x = problem.x
    n = x.shape[0]
    x_adv = boundary_start(x, problem.index, problem.eps, problem.norm, seed, stream)
    active = torch.arange(n, device=x.device)
    values, logits, grad = problem.evaluate(x_adv, active)
    grad_all = torch.zeros_like(x)
    grad_all[active] = grad
    run = APGDRun(
        result=x.clone(), broken=torch.zeros(n, dtype=torch.bool, device=x.device), x_adv=x_adv, active=active,
        size=torch.full((n,), 2.0 * problem.eps, dtype=x.dtype, device=x.device),
        best_x=x_adv.clone(), best_grad=grad.clone(), best_loss=values.clone(), previous=x_adv.clone(),
        # Row 0 is 0, not the start's loss: the reference compares the first step's loss with an unfilled
        # (zero) row at its first checkpoint, and we keep its verdicts.
        history=torch.zeros((steps + 1, n), dtype=torch.float32, device=x.device),
        best_at_check=values.clone(),
        reduced_at_check=torch.ones(n, dtype=torch.bool, device=x.device),  # no "stalled" halving at the first check
        grad_all=grad_all, gap=_checkpoint_gaps(steps)[0])
    problem.retire(run, logits.argmax(1) != problem.y[active])
    return run


def _step(problem: APGDProblem, run: APGDRun, i: int) -> None:
    """Step i on the active points: the momentum step, the new loss and the best point so far."""
    view = (-1,) + (1,) * (problem.x.dim() - 1)
    active, eps, norm = run.active, problem.eps, problem.norm
    a = 0.75 if i > 0 else 1.0
    xa, xx, g = run.x_adv[active], problem.x[active], run.grad_all[active]
    s = run.size[active].view(view)
    step_direction = g.sign() if norm == "Linf" else g / (flat_norm(g, "L2").view(view) + 1e-12)
    candidate = _project(xa + s * step_direction, xx, eps, norm)
    moved = _project(xa + (candidate - xa) * a + (xa - run.previous[active]) * (1 - a), xx, eps, norm)
    run.previous[active] = xa
    run.x_adv[active] = moved
    values, logits, grad = problem.evaluate(moved, active)
    run.grad_all[active] = grad
    run.history[i + 1, active] = values
    better = values > run.best_loss[active]
    run.best_x[active] = torch.where(better.view(view), moved, run.best_x[active])
    run.best_grad[active] = torch.where(better.view(view), grad, run.best_grad[active])
    run.best_loss[active] = torch.where(better, values, run.best_loss[active])
    problem.retire(run, logits.argmax(1) != problem.y[active])


def _checkpoint(run: APGDRun, i: int, rho: float, steps: int) -> None:
    """At a checkpoint: halve η and go back to the best point where fewer than ρ of the steps since the
    last checkpoint raised the loss (reference: check_oscillation), or where neither η nor the best loss
    changed."""
    view = (-1,) + (1,) * (run.x_adv.dim() - 1)
    gap = run.gap
    recent = run.history[i + 1 - gap: i + 2]
    increases = (recent[1:] > recent[:-1]).sum(dim=0)
    oscillating = increases.float() <= gap * rho
    stalled = ~run.reduced_at_check & (run.best_at_check >= run.best_loss)
    halve = oscillating | stalled
    run.reduced_at_check = halve.clone()
    run.best_at_check = run.best_loss.clone()
    active = run.active
    restart_here = halve[active]
    run.size[active] = torch.where(restart_here, run.size[active] / 2.0, run.size[active])
    run.x_adv[active] = torch.where(restart_here.view(view), run.best_x[active], run.x_adv[active])
    run.grad_all[active] = torch.where(restart_here.view(view), run.best_grad[active], run.grad_all[active])
    _, min_gap, decrement = _checkpoint_gaps(steps)
    run.gap = max(gap - decrement, min_gap)
    run.since_check = 0


def apgd(problem: APGDProblem, *, steps: int, rho: float, seed: int,
         stream: int | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run on ``problem``; returns (x_adv, broken). ``stream`` may differ per row."""
    if problem.norm == "L1":
        return apgd_l1(problem, steps=steps, seed=seed, stream=stream, shrinking=problem.shrinking_eps)
    with inflight.resume(APGDRun, problem.x, lambda: _start(problem, steps, seed, stream)) as run:
        for i in run.steps(steps):
            if run.active.numel() == 0:
                break
            _step(problem, run, i)
            run.since_check += 1
            if run.since_check == run.gap:
                _checkpoint(run, i, rho, steps)
        run.result[run.active] = run.x_adv[run.active]
    return run.result, run.broken


def _ce(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def _dlr(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return dlr_loss(logits, y)


def _targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return targeted_dlr_loss(logits, y, target)


@register_attack
@dataclass
class APGD(Attack):
    """APGD with the cross-entropy (``loss='ce'``, AutoAttack's APGD-CE) or DLR loss."""

    steps: int = 100
    restarts: int = 1
    rho: float = 0.75
    loss: Literal["ce", "dlr"] = "ce"
    eot: int = 1     # gradients averaged over this many passes (AutoAttack 'rand': 20, for randomised defences)
    shrinking_eps: bool = False   # L1 only: 30/30/40% of the steps at 3·eps, 2·eps, eps (AutoAttack's L1 version)
    norms = AUTOATTACK_NORMS

    def classes_needed(self) -> int:
        return 3 if self.loss == "dlr" else 2

    def classes_reason(self) -> str:
        return "its DLR loss divides by the gap between the largest and the 3rd largest logit" if self.loss == "dlr" \
            else super().classes_reason()

    name = "apgd"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        loss = _ce if self.loss == "ce" else _dlr
        best = x.clone()
        # resumes after the last finished restart
        with inflight.parts(self.name, best, torch.arange(x.shape[0], device=x.device)) as run:
            restarts = max(self.restarts, 1)
            for restart in run.each(restarts):
                todo = run.todo
                if todo.numel() == 0:
                    break
                with work.part(restart, restarts):
                    problem = APGDProblem(model, x[todo], y[todo], index[todo], loss, y[todo], self.eps, self.norm,
                                          shrinking_eps=self.shrinking_eps, eot=self.eot)
                    x_adv, broken = apgd(problem, steps=self.steps, rho=self.rho, seed=self.seed,
                                         stream=11 + restart)
                best[todo] = x_adv
                run.todo = todo[~broken]
        return best


@register_attack
@dataclass
class APGDT(Attack):
    """AutoAttack's APGD-T: targeted DLR towards each of the ``targets`` highest other classes,
    one after another or side by side (:mod:`attacks.targets`)."""

    steps: int = 100
    restarts: int = 1
    targets: int = 9
    rho: float = 0.75
    rows_per_pass: int = 0   # 0: by device (attacks.targets.AUTO_ROWS_PER_PASS); 1: targets in order
    shrinking_eps: bool = False   # L1 only: 30/30/40% of the steps at 3·eps, 2·eps, eps (AutoAttack's L1 version)
    name = "apgd-t"
    norms = AUTOATTACK_NORMS
    speed_only = ("rows_per_pass",)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_rows_per_pass(self.name, self.rows_per_pass)

    def classes_needed(self) -> int:
        return 4

    def classes_reason(self) -> str:
        return "its targeted DLR loss divides by the gap between the largest and the 3rd and 4th largest logits"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            order = model(x).float().argsort(dim=1)

        def run(xs, ys, points, target, k, restart, group):
            problem = APGDProblem(model, xs, ys, points, _targeted, target, self.eps, self.norm, group,
                                  shrinking_eps=self.shrinking_eps)
            return apgd(problem, steps=self.steps, rho=self.rho, seed=self.seed, stream=101 + 17 * k + restart)

        ks = list(range(2, min(self.targets, order.shape[1] - 1) + 2))
        plan = TargetPlan(ks, max(self.restarts, 1), self.rows_per_pass, keep_robust=True, kind=self.name)
        return attack_targets(run, x, y, index, order, plan)
