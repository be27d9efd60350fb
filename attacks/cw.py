"""CW-L2 (Carlini and Wagner, IEEE S&P 2017) in the form torchattacks runs it: the image is
x = (tanh(w) + 1)/2, Adam on w minimises ‖x − x₀‖₂² + c·max(z_y − max_{j≠y} z_j, −κ), the closest
misclassified iterate is kept, and a point gives up when its loss, checked every tenth of the
steps, has risen since the last check (torchattacks checks the batch's summed loss; ours is per
point, so that a point's result does not depend on its batch).

CW is a minimum-norm attack. In an evaluation at radius eps a point counts as broken only when the
closest adversarial it found lies within eps, so ``perturb`` returns that example when
‖x_adv − x₀‖₂ ≤ eps and the clean image otherwise. ``search_steps`` > 1 adds the paper's binary
search over c (×10 while failing, bisection once successful).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import inflight, work
from .core import Attack
from .suites import register_attack


def _f(logits: torch.Tensor, y: torch.Tensor, kappa: float) -> torch.Tensor:
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf).amax(dim=1)
    return (true - other).clamp(min=-kappa)


@register_attack
@dataclass
class CW(Attack):
    """Carlini-Wagner L2: Adam on the tanh-space image, minimising the perturbation's size plus c times
    the margin loss. It looks for the smallest perturbation, and keeps it only where it lies within
    ``eps``: a point whose smallest one found is larger gets its clean image back (torchattacks' CW
    returns it whatever its size)."""

    norm: str = "L2"
    eps: float = 0.5
    c: float = 1.0
    kappa: float = 0.0
    steps: int = 100
    lr: float = 0.01
    search_steps: int = 1
    name = "cw-l2"
    norms = ("L2",)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        n, searches = x.shape[0], max(self.search_steps, 1)
        with inflight.begin("cw", x, ("c", "low", "high", "best", "best_sq", "counters")) as run:
            if run.restored is None:
                c = torch.full((n,), float(self.c), device=x.device)
                low = torch.zeros(n, device=x.device)
                high = torch.full((n,), torch.inf, device=x.device)
                best, best_sq = x.clone(), torch.full((n,), torch.inf, device=x.device)
                first = 0
            else:   # resumed after a finished search step (or inside one: _minimise resumes too)
                c, low, high, best, best_sq = (run.restored[k] for k in ("c", "low", "high", "best", "best_sq"))
                (first,) = run.restored["counters"].tolist()

            def state(done: int):
                return lambda: {"c": c, "low": low, "high": high, "best": best, "best_sq": best_sq,
                                "counters": inflight.counters(done)}

            run.hold(state(first))
            for search in range(first, searches):
                with work.part(search, searches):
                    adv, sq = self._minimise(model, x, y, c)
                closer = sq < best_sq
                best[closer], best_sq[closer] = adv[closer], sq[closer]
                found = torch.isfinite(sq)
                high = torch.where(found, torch.minimum(high, c), high)
                low = torch.where(found, low, torch.maximum(low, c))
                c = torch.where(torch.isfinite(high), (low + high) / 2, c * 10)
                run.offer(state(search + 1))
        within = best_sq.sqrt() <= self.eps
        return torch.where(within.view(-1, *([1] * (x.dim() - 1))), best, x)

    def _minimise(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Adam run: (closest misclassified iterate, its squared L2 distance; inf where none)."""
        n = x.shape[0]
        names = ("w", "adam_step", "exp_avg", "exp_avg_sq", "best", "best_sq", "going", "previous", "counters")
        with inflight.begin("cw run", x, names) as run:
            w = torch.atanh(torch.clamp(x * 2 - 1, -1, 1)).detach().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            if run.restored is None:
                best, best_sq = x.clone(), torch.full((n,), torch.inf, device=x.device)
                going = torch.ones(n, dtype=torch.bool, device=x.device)
                previous = torch.full((n,), torch.inf, device=x.device)
                first = 0
            else:   # resumed in the middle: w with Adam's moments, and the per-point bookkeeping
                restored = run.restored
                first = int(restored["counters"][0])
                with torch.no_grad():
                    w.copy_(restored["w"])
                if first > 0:
                    optimizer.state[w] = {"step": restored["adam_step"].cpu(), "exp_avg": restored["exp_avg"],
                                          "exp_avg_sq": restored["exp_avg_sq"]}
                best, best_sq, going, previous = (restored[k] for k in ("best", "best_sq", "going", "previous"))

            def state(step: int):
                def tensors():      # built only when a snapshot is due
                    adam = optimizer.state.get(w) or {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(w),
                                                      "exp_avg_sq": torch.zeros_like(w)}   # before the first step
                    return {"w": w, "adam_step": adam["step"], "exp_avg": adam["exp_avg"],
                            "exp_avg_sq": adam["exp_avg_sq"], "best": best, "best_sq": best_sq, "going": going,
                            "previous": previous, "counters": inflight.counters(step)}
                return tensors

            check_every = max(self.steps // 10, 1)
            for step in range(first, self.steps):
                run.offer(state(step))
                work.advance(step, self.steps)
                adv = (torch.tanh(w) + 1) / 2
                sq = (adv - x).flatten(1).pow(2).sum(dim=1)
                logits = model(adv).float()
                cost = sq + c * _f(logits, y, self.kappa)
                # Only w's gradient: backward() would also fill (and pay for) the model's weight gradients.
                # Adam works per element: each point's w follows its own gradient only.
                (w.grad,) = torch.autograd.grad(cost.sum(), w)
                optimizer.step()
                with torch.no_grad():
                    wrong = (logits.argmax(dim=1) != y) & going
                    closer = wrong & (sq < best_sq)
                    best[closer], best_sq[closer] = adv.detach()[closer], sq.detach()[closer]
                    if step % check_every == 0:
                        going &= ~(cost.detach() > previous)  # a stopped point's w moves on but is never read
                        previous = torch.where(going, cost.detach(), previous)
                        if not bool(going.any()):
                            break
        return best, best_sq
