"""Square attack: score-based black-box random search (Andriushchenko, Croce, Flammarion and Hein,
ECCV 2020), Linf, L2 and L1 (AutoAttack's L1 version), with AutoAttack's settings (p_init 0.8, margin
loss, 5000 queries).

Each iteration proposes a change inside one random square window (side from the share p of the
image, which shrinks on a fixed schedule) and keeps it when the margin loss falls; a point stops
at its first misclassification. Windows and signs are drawn per point from its index (the
reference draws one window for the whole batch per iteration); the query budget is the same.

Speculative proposals: a rejected proposal leaves the point's best image as it was, and the next
proposal depends only on that image and the point's own iteration number, so the next k proposals
of a point can be evaluated in one forward pass, before knowing whether the first is kept. The
point then takes its first kept proposal (or none) and moves on past it; the later ones were built
on an image that is no longer its best and are dropped. The search is the one-proposal-per-pass
search exactly, in fewer, wider forward passes: k grows as points leave (``forward_batch`` images
per pass), which is where a small batch would leave the device idle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from . import inflight, memory, verdict, work
from .core import AUTOATTACK_NORMS, Attack, flat_norm
from .l1 import project_l1
from .errors import AttackError
from .rng import point_integers
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


SPECULATION_LIMIT = 16  # proposals per point in one forward pass, at most
# images per forward pass by device: CPU throughput peaks near 32-48 images (docs/benchmarks.md); on
# CUDA a ceiling, under the cap an evaluation measures from the free memory (attacks.memory); elsewhere 256
AUTO_FORWARD_BATCH = memory.SQUARE_ROWS


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j (positive: still correct)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -torch.inf).amax(dim=1)
    return true - other


def _unit(pattern: torch.Tensor, norm: str) -> torch.Tensor:
    size = pattern.abs().sum() if norm == "L1" else pattern.norm()
    return pattern / size.clamp_min(1e-12)


def nested_rectangles(rows: int, cols: int, dtype: torch.dtype, norm: str = "L2") -> torch.Tensor:
    """rows×cols weights of nested rectangles around the centre (rows//2, cols//2): the k-th adds
    1/(k+1)² (L1: 1/(k+1)⁴) on its (2k+1)×(2k+1) square, clipped to the shape; unit norm."""
    power = 4 if norm == "L1" else 2
    pattern = torch.zeros(rows, cols, dtype=dtype)
    for k in range(max(rows // 2, cols // 2) + 1):
        top, left = max(rows // 2 - k, 0), max(cols // 2 - k, 0)
        pattern[top:rows // 2 + k + 1, left:cols // 2 + k + 1] += 1.0 / (k + 1) ** power
    return _unit(pattern, norm)


def l2_pattern(s: int, device: torch.device, dtype: torch.dtype, norm: str = "L2") -> torch.Tensor:
    """The reference's window shape (L2 and L1): nested rectangles on the top s//2 rows and their negative on
    the other rows, unit norm (each proposal then uses it or its transpose, with probability ½)."""
    pattern = torch.zeros(s, s, dtype=dtype)
    pattern[:s // 2] = nested_rectangles(s // 2, s, dtype, norm) if s // 2 else pattern[:0]
    pattern[s // 2:] = -nested_rectangles(s - s // 2, s, dtype, norm)
    return _unit(pattern, norm).to(device)


def oriented(pattern: torch.Tensor, transpose: torch.Tensor) -> torch.Tensor:
    """n×1×s×s: the pattern, transposed where ``transpose`` (n integers in {0, 1}) is 1."""
    flip = transpose.to(torch.bool)[:, None, None, None]
    return torch.where(flip, pattern.T[None, None], pattern[None, None])


def _window_index(v: torch.Tensor, s: int) -> torch.Tensor:
    return v[:, None] + torch.arange(s, device=v.device)[None, :]


@register_attack
@dataclass
class Square(Attack):
    queries: int = 5000
    p_init: float = 0.8
    rescale_schedule: bool = False
    forward_batch: int = 0  # images per forward pass that speculative proposals may fill; 0: by device
    name = "square"
    norms = AUTOATTACK_NORMS
    speed_only = ("forward_batch",)
    white_box = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forward_batch < 0:
            raise AttackError("square: forward_batch must be 0 (by device) or a number of images, "
                              f"got {self.forward_batch}")

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._linf(model, x, y, index) if self.norm == "Linf" else self._windows(model, x, y, index)

    def _side_table(self, features: int, channels: int, side) -> torch.Tensor:
        """The window side at every iteration (the schedule of p), looked up per proposal."""
        return torch.tensor([side(p_at(i, self.p_init, self.queries, self.rescale_schedule) * features / channels)
                             for i in range(self.queries)], dtype=torch.int64)

    # -------------------------------------------------------------- shared loop

    def _search(self, model, x, y, index, x_start, propose) -> torch.Tensor:
        """Random search from ``x_start``; ``propose(iterations, rows, x_best)`` builds one proposal per
        (iteration, point row) from x_best[rows]."""
        device = x.device

        def start() -> SquareRun:
            margin = _margin(model(x_start).float(), y)
            return SquareRun(x_best=x_start, best_loss=margin,
                             next_iteration=torch.zeros(len(y), dtype=torch.int64, device=device),
                             done=verdict.retire(model, x_start, y, index, margin <= 0))

        with inflight.resume(SquareRun, x, start) as run:
            # still going: not broken (a kept proposal with margin ≤ 0 that the evaluation's judge confirms ends a
            # point: attacks.verdict) and queries left
            active = (~run.done & (run.next_iteration < self.queries)).nonzero(as_tuple=True)[0]
            width = self.forward_batch or memory.rows_per_pass(device, AUTO_FORWARD_BATCH, 256)
            budget = len(y) * self.queries
            # read about once a second (attacks.work): the queries the points still going have left
            work.advance(lambda: budget - float((self.queries - run.next_iteration[active]).sum()), budget)
            # Two host syncs per pass (on CUDA): the proposals' positions and the points still going. The
            # per-point updates are torch.where over the active rows, not boolean indexing (a sync each).
            while active.numel():
                active = self._pass(model, y, index, run, active,
                                    min(max(width // active.numel(), 1), SPECULATION_LIMIT), propose)
                run.offer()
        return run.x_best

    def _pass(self, model, y, index, run: "SquareRun", active: torch.Tensor, k: int, propose) -> torch.Tensor:
        """One forward pass of up to ``k`` proposals per active point; returns the points still going."""
        device, n = y.device, active.numel()
        x_best, best_loss, next_iteration = run.x_best, run.best_loss, run.next_iteration
        iterations = next_iteration[active][:, None] + torch.arange(k, device=device)[None, :]   # n×k
        valid = iterations < self.queries
        at = valid.view(-1).nonzero(as_tuple=True)[0]   # the valid (point, proposal) cells, row by row
        owner = at // k
        candidates = propose(iterations.view(-1)[at], active[owner], x_best)
        new_margin = _margin(model(candidates).float(), y[active[owner]])
        keep = (new_margin < best_loss[active[owner]]) | (new_margin <= 0)
        slot = torch.full((n * k,), -1, dtype=torch.int64, device=device)
        slot[at] = torch.arange(at.numel(), device=device)
        kept = torch.zeros((n * k,), dtype=torch.bool, device=device)
        kept[at] = keep
        slot, kept = slot.view(n, k), kept.view(n, k)
        accepted = kept.any(dim=1)
        first = kept.to(torch.int8).argmax(dim=1)  # the first kept proposal of each point
        # an active point has queries left, so its first cell is valid: `picked` is a real slot even
        # where nothing was accepted (its value is then not used)
        picked = slot[torch.arange(n, device=device), first]
        x_best[active] = torch.where(accepted.view(-1, *([1] * (x_best.dim() - 1))), candidates[picked],
                                     x_best[active])
        best_loss[active] = torch.where(accepted, new_margin[picked], best_loss[active])
        next_iteration[active] += torch.where(accepted, first + 1, valid.sum(dim=1))
        broken = verdict.retire(model, x_best[active], y[active], index[active], accepted & (new_margin[picked] <= 0))
        run.done[active] |= broken
        return active[~broken & (next_iteration[active] < self.queries)]

    # -------------------------------------------------------------- Linf

    def _linf(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        signs = point_integers(index, c * w, 2, self.seed, 1).view(b, c, 1, w).to(x.dtype) * 2 - 1
        x_best = (x + self.eps * signs).clamp(0.0, 1.0)

        def side(area: float) -> int:
            return min(max(int(round(math.sqrt(area))), 1), min(h, w))

        sides = self._side_table(c * h * w, c, side).to(x.device)
        rows_at = torch.arange(h, device=x.device)[None, :]
        cols_at = torch.arange(w, device=x.device)[None, :]

        def propose(iterations: torch.Tensor, rows: torch.Tensor, x_best: torch.Tensor) -> torch.Tensor:
            s = sides[iterations]
            where = point_integers(index[rows], 2, torch.stack([h - s + 1, w - s + 1], dim=1), self.seed,
                                   1000 + iterations)
            sign = point_integers(index[rows], c, 2, self.seed, 50000 + iterations).to(x.dtype) * 2 - 1
            in_rows = (rows_at >= where[:, :1]) & (rows_at < where[:, :1] + s[:, None])
            in_cols = (cols_at >= where[:, 1:]) & (cols_at < where[:, 1:] + s[:, None])
            window = (in_rows[:, :, None] & in_cols[:, None, :])[:, None].to(x.dtype)  # n×1×h×w
            step = 2.0 * self.eps * sign[:, :, None, None] * window
            xx = x[rows]
            candidate = x_best[rows] + step
            candidate = torch.minimum(torch.maximum(candidate, xx - self.eps), xx + self.eps)
            return candidate.clamp(0.0, 1.0)

        return self._search(model, x, y, index, x_best, propose)

    # -------------------------------------------------------------- L2 and L1

    def _onto_ball(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """L2: x + delta scaled to norm eps, clipped to [0, 1]. L1: x + delta + the correction that projects it
        onto the ball of radius eps·(1 − 1e-6) inside the box, as the reference adds it."""
        if self.norm == "L1":
            return (x + delta) + (project_l1(x, delta, self.eps * (1.0 - 1e-6)) - delta)
        delta = delta / flat_norm(delta, "L2").clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + self.eps * delta).clamp(0.0, 1.0)

    def _window_norm(self, values: torch.Tensor) -> torch.Tensor:
        """Each channel's norm over the last two dimensions (n×c×1×1)."""
        if self.norm == "L1":
            return values.abs().sum(dim=(-2, -1), keepdim=True)
        return values.square().sum(dim=(-2, -1), keepdim=True).sqrt()

    def _budget(self, image_norm: torch.Tensor, windows_norm: torch.Tensor, c: int) -> torch.Tensor:
        """The norm the new window gets: what the image has left of eps, shared among the channels, plus what the
        two windows held (the reference's formulas for each norm)."""
        if self.norm == "L1":
            return ((self.eps - image_norm).clamp_min(0.0) / c + windows_norm) * c
        return ((self.eps**2 - image_norm.square()).clamp_min(0.0) / c + windows_norm.square()).sqrt()

    def _grid_start(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The start: a grid of window patterns with random signs per cell and channel, then onto the ball."""
        _, c, h, w = x.shape
        s = max(h // 5, 1)
        offset = (h - s * 5) // 2
        delta = torch.zeros_like(x)
        pattern = l2_pattern(s, x.device, x.dtype, self.norm)
        cells = [(offset + i * s, offset + j * s) for i in range(h // s) for j in range(w // s)]
        draws = point_integers(index, len(cells) * (c + 1), 2, self.seed, 2)  # signs, then one transpose per cell
        signs = draws[:, :len(cells) * c].to(x.dtype) * 2 - 1
        for k, (r, q) in enumerate(cells):
            if r + s <= h and q + s <= w:
                shape = oriented(pattern, draws[:, len(cells) * c + k])
                delta[:, :, r:r + s, q:q + s] += shape * signs[:, k * c:(k + 1) * c, None, None]
        return self._onto_ball(x, delta)

    def _windows(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        view = (-1, 1, 1, 1)
        x_best = self._grid_start(x, index)

        def odd_side(area: float) -> int:
            s = max(int(round(math.sqrt(area))), 3)
            return min(s + (1 - s % 2), min(h, w))

        sides = self._side_table(c * h * w, c, odd_side).to(x.device)
        # per window side, made once: the pattern and the window positions' bounds (built on the host,
        # each would be a host-to-device copy on every pass)
        patterns: dict[int, torch.Tensor] = {}
        bounds: dict[int, torch.Tensor] = {}

        def propose_side(s: int, iterations: torch.Tensor, rows: torch.Tensor, x_best: torch.Tensor) -> torch.Tensor:
            n = rows.numel()
            xx = x[rows]
            current = x_best[rows] - xx
            if s not in patterns:
                patterns[s] = l2_pattern(s, x.device, x.dtype, self.norm)
                bounds[s] = torch.tensor([[h - s + 1, w - s + 1, h - s + 1, w - s + 1]], device=x.device)
            limits = bounds[s]
            where = point_integers(index[rows], 4, limits, self.seed, 1000 + iterations)
            b_idx = torch.arange(n, device=x.device)[:, None, None, None]
            c_idx = torch.arange(c, device=x.device)[None, :, None, None]
            r1, q1 = _window_index(where[:, 0], s), _window_index(where[:, 1], s)
            r2, q2 = _window_index(where[:, 2], s), _window_index(where[:, 3], s)
            at1 = (b_idx, c_idx, r1[:, None, :, None], q1[:, None, None, :])
            at2 = (b_idx, c_idx, r2[:, None, :, None], q2[:, None, None, :])
            old = current[at1]  # n×c×s×s
            both = torch.zeros_like(current)
            both[at1] = 1.0
            both[at2] = 1.0
            windows_norm = self._window_norm(current * both)
            image_norm = flat_norm(current, self.norm).view(view)
            draws = point_integers(index[rows], c + 1, 2, self.seed, 50000 + iterations)  # c signs, a transpose
            sign = draws[:, :c].to(x.dtype) * 2 - 1
            fresh = oriented(patterns[s], draws[:, c]) * sign[:, :, None, None] + old / (self._window_norm(old) + 1e-12)
            fresh = fresh / (self._window_norm(fresh) + 1e-12) * self._budget(image_norm, windows_norm, c)
            current[at2] = 0.0
            current[at1] = fresh
            return self._onto_ball(xx, current)

        def propose(iterations: torch.Tensor, rows: torch.Tensor, x_best: torch.Tensor) -> torch.Tensor:
            """Windows are gathered with a fixed side: one group per side among the proposals."""
            side_of = sides[iterations]
            out = torch.empty((rows.numel(), c, h, w), dtype=x.dtype, device=x.device)
            for side in side_of.unique().tolist():
                group = (side_of == side).nonzero(as_tuple=True)[0]
                out[group] = propose_side(int(side), iterations[group], rows[group], x_best)
            return out

        return self._search(model, x, y, index, x_best, propose)


@dataclass
class SquareRun(inflight.RunState):
    """A Square search in the middle: all that a point's next proposals depend on."""

    kind = "square"
    x_best: torch.Tensor           # each point's best example so far
    best_loss: torch.Tensor        # its margin (≤ 0: broken)
    next_iteration: torch.Tensor   # the point's next iteration (its queries so far)
    done: torch.Tensor             # whether it left the search, broken
