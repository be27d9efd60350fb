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

from . import inflight, work
from .core import Attack, dlr_loss, flat_norm, targeted_dlr_loss
from .rng import point_normal, point_uniform
from .suites import register_attack
from .targets import attack_targets, check_rows_per_pass, retire_groups

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# what an APGD run in the middle of its steps is (attacks.inflight): per-point tensors, then the counters
# (next step, checkpoint interval, steps since the last checkpoint)
RUN_STATE = ("result", "broken", "x_adv", "active", "step", "best_x", "best_grad", "best_loss", "previous", "history",
             "best_at_check", "reduced_at_check", "grad_all", "counters")


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


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, loss: Loss, target: torch.Tensor,
         *, eps: float, norm: str, steps: int, rho: float, seed: int, stream: int | torch.Tensor,
         group: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run; returns (x_adv, broken). ``loss(logits, y, target)`` is maximised per row.

    ``stream`` may differ per row; ``group``: rows that are runs on one point (:mod:`attacks.targets`)."""
    n = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)
    first_gap, min_gap, decrement = _checkpoint_gaps(steps)

    def evaluate(points: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points = points.detach().requires_grad_(True)
        logits = model(points)
        values = loss(logits.float(), y[rows], target[rows])
        (grad,) = torch.autograd.grad(values.sum(), points)
        return values.detach(), logits.detach(), grad.detach()

    with inflight.begin("apgd run", x, RUN_STATE) as run:
        if run.restored is None:
            result = x.clone()
            broken = torch.zeros(n, dtype=torch.bool, device=x.device)
            x_adv = boundary_start(x, index, eps, norm, seed, stream)
            active = torch.arange(n, device=x.device)
            values, logits, grad = evaluate(x_adv, active)
            step = torch.full((n,), 2.0 * eps, dtype=x.dtype, device=x.device)
            best_x, best_grad, best_loss = x_adv.clone(), grad.clone(), values.clone()
            previous = x_adv.clone()
            # history[i + 1]: the loss after step i. Row 0 is 0, not the start's loss: the reference compares the
            # first step's loss with an unfilled (zero) row at its first checkpoint, and we keep its verdicts.
            history = torch.zeros((steps + 1, n), dtype=torch.float32, device=x.device)
            best_at_check = best_loss.clone()
            reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)  # no "stalled" halving at the first check
            grad_all = torch.zeros_like(x)
            grad_all[active] = grad
            first, gap, since_check = 0, first_gap, 0
        else:   # resumed in the middle of the run: every quantity above is per point and restored as it was
            (result, broken, x_adv, active, step, best_x, best_grad, best_loss, previous, history, best_at_check,
             reduced_at_check, grad_all) = (run.restored[name] for name in RUN_STATE[:-1])
            first, gap, since_check = run.restored["counters"].tolist()

        # Masks over the active rows are applied with torch.where, not by boolean indexing: a boolean index
        # is a nonzero, a host sync on CUDA. One sync per step is left, the one that shrinks `active`.
        def retire(wrong: torch.Tensor) -> torch.Tensor:
            """Record points misclassified at their current iterate; return the ones still going."""
            result[active] = torch.where(wrong.view(view), x_adv[active], result[active])
            broken[active] |= wrong
            return active[retire_groups(~wrong, active, wrong, group)]

        if run.restored is None:
            active = retire(logits.argmax(1) != y[active])
        for i in range(first, steps):
            if active.numel() == 0:
                break
            run.offer(lambda: dict(zip(RUN_STATE, (result, broken, x_adv, active, step, best_x, best_grad, best_loss,
                                                   previous, history, best_at_check, reduced_at_check, grad_all,
                                                   inflight.counters(i, gap, since_check)))))
            work.advance(i, steps)
            a = 0.75 if i > 0 else 1.0
            xa, xx, g = x_adv[active], x[active], grad_all[active]
            s = step[active].view(view)
            step_direction = g.sign() if norm == "Linf" else g / (flat_norm(g, "L2").view(view) + 1e-12)
            candidate = _project(xa + s * step_direction, xx, eps, norm)
            moved = _project(xa + (candidate - xa) * a + (xa - previous[active]) * (1 - a), xx, eps, norm)
            previous[active] = xa
            x_adv[active] = moved
            values, logits, grad = evaluate(moved, active)
            grad_all[active] = grad
            history[i + 1, active] = values
            better = values > best_loss[active]
            best_x[active] = torch.where(better.view(view), moved, best_x[active])
            best_grad[active] = torch.where(better.view(view), grad, best_grad[active])
            best_loss[active] = torch.where(better, values, best_loss[active])
            active = retire(logits.argmax(1) != y[active])
            since_check += 1
            if since_check == gap:
                # share of the last `gap` steps that raised the loss, per point (reference: check_oscillation)
                recent = history[i + 1 - gap: i + 2]
                increases = (recent[1:] > recent[:-1]).sum(dim=0)
                oscillating = increases.float() <= gap * rho
                stalled = ~reduced_at_check & (best_at_check >= best_loss)
                halve = oscillating | stalled
                reduced_at_check = halve.clone()
                best_at_check = best_loss.clone()
                restart_here = halve[active]
                step[active] = torch.where(restart_here, step[active] / 2.0, step[active])
                x_adv[active] = torch.where(restart_here.view(view), best_x[active], x_adv[active])
                grad_all[active] = torch.where(restart_here.view(view), best_grad[active], grad_all[active])
                gap = max(gap - decrement, min_gap)
                since_check = 0
        result[active] = x_adv[active]
    return result, broken


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

    def classes_needed(self) -> int:
        return 3 if self.loss == "dlr" else 2

    def classes_reason(self) -> str:
        return "its DLR loss divides by the gap between the largest and the 3rd largest logit" if self.loss == "dlr" \
            else super().classes_reason()

    name = "apgd"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        loss = _ce if self.loss == "ce" else _dlr
        best = x.clone()
        with inflight.Parts(self.name, best, torch.arange(x.shape[0], device=x.device)) as parts:   # resumes after a restart
            todo = parts.todo
            for restart in range(max(self.restarts, 1)):
                if todo.numel() == 0:
                    break
                if parts.finished_before(restart):
                    continue
                with work.part(restart, max(self.restarts, 1)):
                    x_adv, broken = apgd(model, x[todo], y[todo], index[todo], loss, y[todo], eps=self.eps,
                                         norm=self.norm, steps=self.steps, rho=self.rho, seed=self.seed,
                                         stream=11 + restart)
                best[todo] = x_adv
                todo = todo[~broken]
                parts.finish(restart, todo)
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
    name = "apgd-t"
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
            return apgd(model, xs, ys, points, _targeted, target, eps=self.eps, norm=self.norm, steps=self.steps,
                        rho=self.rho, seed=self.seed, stream=101 + 17 * k + restart, group=group)

        ks = list(range(2, min(self.targets, order.shape[1] - 1) + 2))
        return attack_targets(run, x, y, index, order, ks, max(self.restarts, 1), self.rows_per_pass, keep_robust=True,
                              kind=self.name)
