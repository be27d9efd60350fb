"""Batches of weighted samples of the distinct condition pairs: what the comparators are computed on.

Sample b holds the pair (i, j), i < j, counts[b, i]·counts[b, j] times if the pair is valid (defined in
every RDM compared) and not at all otherwise. A resample of the conditions with counts c thus repeats
each pair as often as the resampled RDM holds it (pairs of a condition with its own copy are left out,
as rsatoolbox leaves them out); all counts 1 is the plain comparison on the pairs present.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

_BUDGET = 2 ** 22            # doubles (32 MB) in the pair matrices built at once by ``pair_sums``


@dataclass(frozen=True)
class Samples:
    """``counts`` (B, n): copies of each condition per sample; ``valid``: the valid pairs, (P,) for all
    samples or (B, P) per sample (the relabelled models of a permutation test move the missing pairs)."""

    counts: np.ndarray
    valid: np.ndarray

    @classmethod
    def every_condition_once(cls, n_cond: int, valid: np.ndarray) -> Samples:
        batch = 1 if valid.ndim == 1 else len(valid)
        return cls(np.ones((batch, n_cond)), valid)

    def __len__(self) -> int:
        return len(self.counts)

    @cached_property
    def pairs(self) -> np.ndarray:
        """(B, P) the multiplicity of every pair in every sample."""
        first, second = np.triu_indices(self.counts.shape[1], 1)
        return self.counts[:, first] * self.counts[:, second] * self.valid

    def pair_sums(self, g: np.ndarray) -> np.ndarray:
        """Σ_p w_bp·g_cp: (C, P) vectors shared by every sample → (C, B).

        With the valid pairs shared, as a quadratic form: the sum over a sample's pairs is cᵀ G c with G
        the strictly upper-triangular matrix of g, so one product of the counts with a few n × n matrices
        replaces building the (B × P) weights (much faster: the matrices stay in cache)."""
        if self.valid.ndim == 2:
            return g @ self.pairs.T
        n = self.counts.shape[1]
        first, second = np.triu_indices(n, 1)
        if not self.valid.all():
            g = g * self.valid
        out = np.empty((len(g), len(self)))
        step = max(1, _BUDGET // (n * n))
        for start in range(0, len(g), step):
            part = g[start:start + step]
            upper = np.zeros((n, n, len(part)))
            upper[first, second] = part.T
            row_sums = (self.counts @ upper.reshape(n, -1)).reshape(len(self), n, len(part))      # (B, n, C)
            out[start:start + step] = np.matmul(self.counts[:, None, :], row_sums)[:, 0].T
        return out


@dataclass(frozen=True)
class Evaluation:
    """A comparator on a batch of samples: ``similarity`` (k, s, B) of every model with every subject and,
    when asked for, the noise-ceiling terms ``lower`` / ``upper`` (B, s): each subject with the pooled RDM
    of the other subjects / of all. ``lower`` is NaN for a subject alone in its sample; the terms of a
    subject absent from a sample (no copies) are unused and unspecified."""

    similarity: np.ndarray
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
