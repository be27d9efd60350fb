"""The fast path of Spearman and rho-a on weighted samples: ranks with multiplicities.

In a sample that holds the distinct pair p w_p times (``neuro.samples``), the rank of p's value in
the resampled vector follows from the distinct values alone: a tie group occupying the expanded
positions L+1 … L+W gets the average rank L + (W + 1)/2, L and W being sums of weights. So the ranks,
and from them Spearman and rho-a, come without building the resampled vectors; a vector shared by
the samples of a batch is sorted once, and each sample only sums its weights in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .samples import Evaluation, Samples


def _ranks_sorted(keys_sorted: np.ndarray, w_sorted: np.ndarray) -> np.ndarray:
    """Average ranks of entries with multiplicities ``w`` (rows sorted by key)."""
    b, p = keys_sorted.shape
    change = np.ones((b, p), bool)
    change[:, 1:] = keys_sorted[:, 1:] != keys_sorted[:, :-1]
    cs = np.cumsum(w_sorted, axis=1)
    # cumulative sums never decrease, so "the value at my group's start / end" is a running max / min
    before = np.maximum.accumulate(np.where(change, cs - w_sorted, 0.0), axis=1)
    is_end = np.ones((b, p), bool)
    is_end[:, :-1] = change[:, 1:]
    through = np.flip(np.minimum.accumulate(np.flip(np.where(is_end, cs, np.inf), axis=1), axis=1), axis=1)
    return before + (through - before + 1.0) / 2.0


def weighted_ranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Ranks of ``values`` (B, P) in the expanded vector where entry p appears w[b, p] times."""
    order = np.argsort(values, axis=1, kind="stable")
    keys = np.take_along_axis(values, order, 1)
    ranks_sorted = _ranks_sorted(keys, np.take_along_axis(w, order, 1))
    out = np.empty_like(ranks_sorted)
    np.put_along_axis(out, order, ranks_sorted, 1)
    return out


def _rank_plan(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a fixed vector: its sort order and, per sorted position, the first and last position of its tie group."""
    order = np.argsort(v, kind="stable")
    keys = v[order]
    p = len(v)
    change = np.ones(p, bool)
    change[1:] = keys[1:] != keys[:-1]
    pos = np.arange(p)
    start = np.maximum.accumulate(np.where(change, pos, 0))
    is_end = np.ones(p, bool)
    is_end[:-1] = change[1:]
    end = np.minimum.accumulate(np.where(is_end, pos, p)[::-1])[::-1]
    return order, start, end


def _ranks_by_plan(plan: tuple[np.ndarray, np.ndarray, np.ndarray], w: np.ndarray) -> np.ndarray:
    """The weighted ranks of one fixed vector under each row of weights ``w`` (B, P), by its sort plan."""
    order, start, end = plan
    ws = w[:, order]
    cs = np.cumsum(ws, axis=1)
    before = cs[:, start] - ws[:, start]
    ranks_sorted = before + (cs[:, end] - before + 1.0) / 2.0
    out = np.empty_like(ranks_sorted)
    out[:, order] = ranks_sorted
    return out


def _ranks(v: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Weighted ranks (R, B, P) of vectors shared by the samples (R, P) or given per sample (R, B, P)."""
    v = np.where(np.isfinite(v), v, np.inf)          # a missing pair (weight 0) sorts last and moves no rank
    if len(v) == 0:
        return np.empty((0,) + pairs.shape)
    if v.ndim == 2:
        return np.stack([_ranks_by_plan(_rank_plan(row), pairs) for row in v])
    return np.stack([weighted_ranks(rows, pairs) for rows in v])


@dataclass(frozen=True)
class RankPath:
    """Spearman (or rho-a, ``rho_a``) on a batch of samples (the arrays as in ``neuro.comparators``)."""

    rho_a: bool

    def batch_size(self, chunk: int, n_pairs: int) -> int:
        """Samples per call: few, so that the ranks of all RDMs stay in cache."""
        return max(1, min(32, 2 ** 19 // max(n_pairs, 1)))

    def _units(self, ranks: np.ndarray, w: np.ndarray) -> np.ndarray:
        """(..., B, P) rank vectors → vectors whose w-weighted inner products are Spearman / rho-a."""
        m = w.sum(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = ranks - (ranks * w).sum(-1, keepdims=True) / m
            if self.rho_a:
                return d * np.sqrt(12.0 / (m ** 3 - m))
            return d / np.sqrt((d * d * w).sum(-1, keepdims=True))

    def _pooled_units(self, pool: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """Units of the ranks of pooled rank sums (B, P)."""
        keys = np.rint(2 * pool).astype(np.int64)            # sums of half-integer ranks: exact integers
        if keys.max() < 2 ** 16:
            keys = keys.astype(np.uint16)                    # numpy's stable argsort is a radix sort here
        return self._units(weighted_ranks(keys, pairs), pairs)

    def _ceiling(self, ranks: np.ndarray, units: np.ndarray, pairs: np.ndarray,
                 copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper (B, s): each subject against the ranks of the summed ranks of the others / of all."""
        total = np.einsum("bs,sbp->bp", copies, ranks)
        upper = np.einsum("sbp,bp,bp->bs", units, self._pooled_units(total, pairs), pairs)
        lower = np.stack([np.einsum("bp,bp,bp->b", units[i],
                                    self._pooled_units(total - copies[:, i:i + 1] * ranks[i], pairs), pairs)
                          for i in range(len(ranks))], 1)
        lower[copies >= copies.sum(1, keepdims=True)] = np.nan            # nobody else in the sample
        return lower, upper

    def evaluate(self, x: np.ndarray, y: np.ndarray, samples: Samples,
                 copies: np.ndarray | None = None) -> Evaluation:
        pairs = samples.pairs
        y_ranks = _ranks(y, pairs)
        y_units = self._units(y_ranks, pairs)
        # a sample whose ranks do not vary has inf units off its pairs (weight 0): NaN, no numpy warning
        with np.errstate(invalid="ignore"):
            similarity = np.einsum("kbp,sbp,bp->ksb", self._units(_ranks(x, pairs), pairs), y_units, pairs,
                                   optimize=True)
            if copies is None:
                return Evaluation(similarity)
            return Evaluation(similarity, *self._ceiling(y_ranks, y_units, pairs, copies))
