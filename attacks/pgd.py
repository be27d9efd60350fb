"""PGD: projected gradient ascent from a random start, with restarts (Madry et al., ICLR 2018)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import inflight, work
from .core import Attack, flat_norm, margin_loss, normalized_step, project
from .rng import point_normal, point_uniform
from .suites import register_attack


def random_start(x: torch.Tensor, index: torch.Tensor, eps: float, norm: str, seed: int, stream: int) -> torch.Tensor:
    """A uniform point of the Linf ball, or for L2 a random direction at a uniform radius (as
    torchattacks' PGDL2), both clipped to [0, 1]; drawn per point from ``seed``."""
    shape = tuple(x.shape[1:])
    if norm == "Linf":
        noise = (2 * point_uniform(index, shape, seed, stream, x.dtype) - 1) * eps
    else:
        direction = point_normal(index, shape, seed, stream, x.dtype)
        direction = direction / flat_norm(direction, "L2").clamp_min(1e-12).view(-1, *([1] * len(shape)))
        radius = point_uniform(index, (1,), seed, stream + 7919, x.dtype).view(-1, *([1] * len(shape)))
        noise = direction * radius * eps
    return (x + noise.to(x.device)).clamp(0.0, 1.0)


@register_attack
@dataclass
class PGD(Attack):
    """``steps`` steps of size ``alpha`` (default eps/4) along sign(∇) (Linf) or ∇/‖∇‖₂ (L2) of
    the loss (CE or margin), each followed by projection onto the eps-ball ∩ [0, 1].

    ``restarts`` re-run from new random starts on the points still unbroken. With
    ``early_stop`` a point leaves the attack at the first iterate that misclassifies it and keeps
    that iterate (never weaker than running on: a point once broken stays broken).
    """

    steps: int = 10
    alpha: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Literal["ce", "margin"] = "ce"
    early_stop: bool = True
    name = "pgd"

    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else self.eps / 4

    def loss_of(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none") if self.loss == "ce" else margin_loss(logits, y)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        best = x.clone()
        with inflight.Parts(self.name, best, torch.ones(x.shape[0], dtype=torch.bool, device=x.device)) as parts:
            unbroken = parts.todo      # resumed after the last finished restart, if any
            for restart in range(max(self.restarts, 1)):
                if parts.finished_before(restart):
                    continue
                rows = unbroken.nonzero(as_tuple=True)[0]
                if rows.numel() == 0:
                    break
                with work.part(restart, max(self.restarts, 1)):
                    x_adv, broken = self._run(model, x[rows], y[rows], index[rows], restart)
                best[rows] = x_adv
                unbroken[rows[broken]] = False
                parts.finish(restart, unbroken)
        return best

    def _run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, restart: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One restart: (x_adv, broken mask) for the given points; resumes in the middle (attacks.inflight)."""
        with inflight.begin("pgd run", x, ("x_adv", "result", "broken", "active", "counters")) as run:
            if run.restored is None:
                x_adv = random_start(x, index, self.eps, self.norm, self.seed, 2 * restart + 1) if self.random_start \
                    else x.clone()
                result = x_adv.clone()
                broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
                active = torch.arange(x.shape[0], device=x.device)
                first = 0
            else:
                x_adv, result, broken, active = (run.restored[k] for k in ("x_adv", "result", "broken", "active"))
                (first,) = run.restored["counters"].tolist()
            alpha = self.step_size()
            for step in range(first, self.steps):
                run.offer(lambda: {"x_adv": x_adv, "result": result, "broken": broken, "active": active,
                                   "counters": inflight.counters(step)})
                work.advance(step, self.steps)
                current = x_adv[active].detach().requires_grad_(True)
                logits = model(current)
                keep = None   # every active point goes on; no masking (each mask is a host sync on CUDA)
                if self.early_stop:
                    wrong = logits.detach().argmax(dim=1) != y[active]
                    if bool(wrong.any()):
                        result[active[wrong]] = current.detach()[wrong]
                        broken[active[wrong]] = True
                        keep = (~wrong).nonzero(as_tuple=True)[0]
                        if keep.numel() == 0:
                            return result, broken
                going = active if keep is None else active[keep]
                loss = self.loss_of((logits if keep is None else logits[keep]).float(), y[going])
                (grad,) = torch.autograd.grad(loss.sum(), current)
                base, grad = (current.detach(), grad) if keep is None else (current.detach()[keep], grad[keep])
                active = going
                x_adv[active] = project(base + alpha * normalized_step(grad, self.norm), x[active], self.eps, self.norm)
        with torch.no_grad():
            final = model(x_adv[active]).argmax(dim=1) != y[active]
        result[active] = x_adv[active]
        broken[active] = final
        return result, broken
