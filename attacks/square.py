"""Square attack: score-based black-box random search (Andriushchenko, Croce, Flammarion and Hein,
ECCV 2020), Linf and L2, with AutoAttack's settings (p_init 0.8, margin loss, 5000 queries).

Each iteration proposes a change inside one random square window (side from the share p of the
image, which shrinks on a fixed schedule) and keeps it when the margin loss falls; a point stops
at its first misclassification. Windows and signs are drawn per point from its index (the
reference draws one window for the whole batch per iteration); the query budget is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .core import Attack, flat_norm
from .rng import point_integers, point_uniform
from .suites import register_attack

SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_at(iteration: int, p_init: float, queries: int, rescale: bool) -> float:
    """The reference schedule: p_init halved at iterations 10, 50, 200, 500, 1000, … (of 10000)."""
    it = int(iteration / queries * 10000) if rescale else iteration
    divisor = 512
    for bound, value in SCHEDULE:
        if it <= bound:
            divisor = value
            break
    return p_init / divisor


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j (positive: still correct)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
    return true - other


def centre_pattern(s: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The L2 proposal shape: nested squares weighted 1/(k+1)², unit L2 norm."""
    pattern = torch.zeros(s, s, dtype=dtype)
    centre = s // 2
    for k in range(centre + 1):
        lo, hi = max(centre - k, 0), min(centre + k + 1, s)
        pattern[lo:hi, lo:hi] += 1.0 / (k + 1) ** 2
    return (pattern / pattern.norm()).to(device)


def _window_index(v: torch.Tensor, s: int) -> torch.Tensor:
    return v[:, None] + torch.arange(s, device=v.device)[None, :]


@register_attack
@dataclass
class Square(Attack):
    queries: int = 5000
    p_init: float = 0.8
    rescale_schedule: bool = False
    name = "square"
    white_box = False

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._linf(model, x, y, index) if self.norm == "Linf" else self._l2(model, x, y, index)

    # -------------------------------------------------------------- shared loop

    def _search(self, model, x, y, index, x_best, propose) -> torch.Tensor:
        margin = _margin(model(x_best).float(), y)
        best_loss = margin.clone()
        active = (margin > 0).nonzero(as_tuple=True)[0]
        for iteration in range(self.queries):
            if active.numel() == 0:
                break
            candidate = propose(iteration, active)
            new_margin = _margin(model(candidate).float(), y[active])
            better = (new_margin < best_loss[active]) | (new_margin <= 0)
            rows = active[better]
            x_best[rows] = candidate[better]
            best_loss[rows] = new_margin[better]
            active = active[new_margin > 0]
        return x_best

    # -------------------------------------------------------------- Linf

    def _linf(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        signs = point_integers(index, c * w, 2, self.seed, 1).view(b, c, 1, w).to(x.dtype) * 2 - 1
        x_best = (x + self.eps * signs).clamp(0.0, 1.0)
        features = c * h * w

        def propose(iteration: int, active: torch.Tensor) -> torch.Tensor:
            p = p_at(iteration, self.p_init, self.queries, self.rescale_schedule)
            s = min(max(int(round(math.sqrt(p * features / c))), 1), min(h, w))
            where = point_integers(index[active], 2, torch.tensor([[h - s + 1, w - s + 1]], device=x.device),
                                   self.seed, 1000 + iteration)
            sign = point_integers(index[active], c, 2, self.seed, 50000 + iteration).to(x.dtype) * 2 - 1
            rows = torch.arange(h, device=x.device)[None, :]
            cols = torch.arange(w, device=x.device)[None, :]
            in_rows = (rows >= where[:, :1]) & (rows < where[:, :1] + s)
            in_cols = (cols >= where[:, 1:]) & (cols < where[:, 1:] + s)
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(x.dtype)  # n×1×h×w
            step = 2.0 * self.eps * sign[:, :, None, None] * window
            xx = x[active]
            candidate = x_best[active] + step
            candidate = torch.minimum(torch.maximum(candidate, xx - self.eps), xx + self.eps)
            return candidate.clamp(0.0, 1.0)

        return self._search(model, x, y, index, x_best, propose)

    # -------------------------------------------------------------- L2

    def _l2(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        features = c * h * w
        view = (-1, 1, 1, 1)
        # start: a grid of centre patterns with random signs per cell and channel, scaled to eps
        s = max(h // 5, 1)
        offset = (h - s * 5) // 2
        delta = torch.zeros_like(x)
        pattern = centre_pattern(s, x.device, x.dtype)
        cells = [(offset + i * s, offset + j * s) for i in range(h // s) for j in range(w // s)]
        signs = point_integers(index, len(cells) * c, 2, self.seed, 2).to(x.dtype) * 2 - 1
        for k, (r, q) in enumerate(cells):
            if r + s <= h and q + s <= w:
                delta[:, :, r:r + s, q:q + s] += pattern * signs[:, k * c:(k + 1) * c, None, None]
        delta = delta / flat_norm(delta, "L2").clamp_min(1e-12).view(view)
        x_best = (x + self.eps * delta).clamp(0.0, 1.0)

        def propose(iteration: int, active: torch.Tensor) -> torch.Tensor:
            n = active.numel()
            p = p_at(iteration, self.p_init, self.queries, self.rescale_schedule)
            s = max(int(round(math.sqrt(p * features / c))), 3)
            s = min(s + (1 - s % 2), min(h, w))  # odd side
            xx = x[active]
            current = x_best[active] - xx
            limits = torch.tensor([[h - s + 1, w - s + 1, h - s + 1, w - s + 1]], device=x.device)
            where = point_integers(index[active], 4, limits, self.seed, 1000 + iteration)
            b_idx = torch.arange(n, device=x.device)[:, None, None, None]
            c_idx = torch.arange(c, device=x.device)[None, :, None, None]
            r1, q1 = _window_index(where[:, 0], s), _window_index(where[:, 1], s)
            r2, q2 = _window_index(where[:, 2], s), _window_index(where[:, 3], s)
            at1 = (b_idx, c_idx, r1[:, None, :, None], q1[:, None, None, :])
            at2 = (b_idx, c_idx, r2[:, None, :, None], q2[:, None, None, :])
            old = current[at1]  # n×c×s×s
            old_norm = old.square().sum(dim=(-2, -1), keepdim=True).sqrt()
            both = torch.zeros_like(current)
            both[at1] = 1.0
            both[at2] = 1.0
            windows_norm = (current * both).square().sum(dim=(-2, -1), keepdim=True).sqrt()
            image_norm = flat_norm(current, "L2").view(view)
            sign = point_integers(index[active], c, 2, self.seed, 50000 + iteration).to(x.dtype) * 2 - 1
            fresh = centre_pattern(s, x.device, x.dtype) * sign[:, :, None, None] + old / (old_norm + 1e-12)
            budget = ((self.eps**2 - image_norm.square()).clamp_min(0.0) / c + windows_norm.square()).sqrt()
            fresh = fresh / (fresh.square().sum(dim=(-2, -1), keepdim=True).sqrt() + 1e-12) * budget
            current[at2] = 0.0
            current[at1] = fresh
            current = current / flat_norm(current, "L2").clamp_min(1e-12).view(view)
            return (xx + self.eps * current).clamp(0.0, 1.0)

        return self._search(model, x, y, index, x_best, propose)
