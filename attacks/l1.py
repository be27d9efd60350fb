"""The L1 geometry of AutoAttack's L1 version: the projection onto the L1 ball inside the box [0, 1].

The nearest point (Euclidean) to a perturbation δ among {d : ‖d‖₁ ≤ eps, x + d ∈ [0, 1]} is, per
coordinate, d_i = sign(δ_i)·clip(|δ_i| − λ, 0, cap_i), where cap_i is how far x_i may move in δ_i's
direction (1 − x_i up, x_i down) and λ ≥ 0 the smallest threshold whose total fits the radius. The
total f(λ) = Σ clip(|δ_i| − λ, 0, cap_i) is piecewise linear and falls with λ, with breaks at
|δ_i| − cap_i (where a coordinate leaves its cap) and |δ_i| (where it reaches 0); sorting the breaks
gives f at each of them by cumulative sums, and λ by interpolation on the piece that crosses eps.
"""

from __future__ import annotations

import torch


def _threshold(size: torch.Tensor, cap: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Per row, λ with Σ clip(size − λ, 0, cap) = eps (rows where the sum at λ = 0 exceeds eps)."""
    breaks = torch.cat([size - cap, size], dim=1)
    slope_change = torch.cat([-torch.ones_like(size), torch.ones_like(size)], dim=1)
    breaks, order = breaks.sort(dim=1)
    slope = slope_change.gather(1, order).cumsum(dim=1)          # f's slope just after each break
    rise = torch.cat([torch.zeros_like(breaks[:, :1]), (breaks[:, 1:] - breaks[:, :-1]) * slope[:, :-1]], dim=1)
    value = cap.sum(dim=1, keepdim=True) + rise.cumsum(dim=1)    # f at each break (all capped below the first)
    last = ((value > eps[:, None]).sum(dim=1, keepdim=True) - 1).clamp(min=0, max=breaks.shape[1] - 1)
    at, above, falling = breaks.gather(1, last), value.gather(1, last), -slope.gather(1, last)
    return (at + (above - eps[:, None]) / falling.clamp_min(1.0)).squeeze(1)


def project_l1(x: torch.Tensor, delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """The perturbation nearest to ``delta`` with L1 norm at most ``eps`` (a number or one per row) that keeps
    ``x + d`` in [0, 1]."""
    shape = delta.shape
    flat_x, flat = x.flatten(1), delta.flatten(1)
    size = flat.abs()
    cap = torch.where(flat > 0, 1.0 - flat_x, flat_x).clamp_min(0.0)
    radius = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(flat.shape[0])
    fits = torch.minimum(size, cap).sum(dim=1) <= radius
    lam = torch.where(fits, torch.zeros_like(radius), _threshold(size, cap, radius).clamp_min(0.0))
    return (flat.sign() * torch.minimum((size - lam[:, None]).clamp_min(0.0), cap)).view(shape)
