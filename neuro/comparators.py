"""One interface per comparator for the inference: the comparator on batches of weighted samples.

Bootstrap samples, noise ceilings and permutation nulls are all a comparator computed on samples that
weight the distinct condition pairs (``neuro.samples.Samples``: a resample of the conditions repeats
pairs, a missing pair weighs 0). Each comparator has one ``Statistic`` with two ways to compute them:

- the reference path (``reference_evaluate``): the plain comparator of ``neuro.compare`` on each
  sample's resampled vectors, built by repeating each pair as often as the sample holds it; one sample
  at a time, slow and plainly right;
- at most one fast path (``Statistic.fast``, a ``FastPath``): the same numbers for a batch of samples
  without building their vectors (``neuro.moments`` for Pearson and cosine, ``neuro.weighted_ranks``
  for Spearman and rho-a). Kendall's taus and the whitened comparators have none.

The inference calls ``evaluate`` (the fast path where there is one), ``ceiling_means`` and
``batch_size``. Arrays: ``x`` (k, P) model vectors shared by every sample, or (k, B, P) one set per
sample (the relabelled models of a permutation test); ``y`` (s, P) subject vectors; ``copies`` (B, s)
the copies of each subject in each sample, given when the noise ceiling is wanted. The entries of a
pair a sample does not hold are never used and may be NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.stats import rankdata

from .compare import COMPARATORS, Comparator, double_centred, resolve_method
from .errors import NeuroError
from .moments import MomentPath
from .samples import Evaluation, Samples
from .weighted_ranks import RankPath

Pool = Callable[[np.ndarray], np.ndarray]

_RESAMPLED_WHOLE_ONLY = ("whitened comparators cannot be bootstrapped over conditions (resampled conditions leave "
                         "pairs undefined); use over='subjects' (robust-kd: --bootstrap-over subjects), or a "
                         "pearson/cosine/rank comparator")
_CEILING_WHOLE_ONLY = "whitened comparators need complete RDMs for a noise ceiling"


class FastPath(Protocol):
    """A comparator computed for a batch of samples at once (the arrays as in the module's doc)."""

    def batch_size(self, chunk: int, n_pairs: int) -> int:
        """Samples per call that suit the path, given the caller's ``chunk``."""

    def evaluate(self, x: np.ndarray, y: np.ndarray, samples: Samples,
                 copies: np.ndarray | None = None) -> Evaluation:
        """Every model with every subject on every sample; with ``copies``, the noise-ceiling terms too."""


@dataclass(frozen=True)
class Statistic:
    """How the inference computes one comparator. ``pool`` makes one sample's subject vectors (s, P')
    comparable before they are averaged into a group RDM (None: no noise ceiling for it)."""

    comparator: Comparator
    pool: Pool | None = None
    fast: FastPath | None = None
    whole_rdms_only: bool = False       # defined on complete RDMs over every condition once (whitened)

    @property
    def name(self) -> str:
        return self.comparator.name


STATISTICS: dict[str, Statistic] = {}


def register_statistic(name: str, pool: Pool | None, fast: FastPath | None = None,
                       whole_rdms_only: bool = False) -> None:
    STATISTICS[name] = Statistic(COMPARATORS[name], pool, fast, whole_rdms_only)


def _unit_rms(v: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / np.sqrt((v * v).mean(1, keepdims=True))


def _z_scores(v: np.ndarray) -> np.ndarray:
    return _unit_rms(v - v.mean(1, keepdims=True))


def _rank_pool(v: np.ndarray) -> np.ndarray:
    return rankdata(v, axis=1)


def _whitened_pool(centred: bool) -> Pool:
    def pool(v: np.ndarray) -> np.ndarray:
        if centred:
            v = v - v.mean(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return v / np.linalg.norm(double_centred(v), axis=1, keepdims=True)
    return pool


register_statistic("cosine", _unit_rms, MomentPath(centred=False))
register_statistic("pearson", _z_scores, MomentPath(centred=True))
register_statistic("spearman", _rank_pool, RankPath(rho_a=False))
register_statistic("rho-a", _rank_pool, RankPath(rho_a=True))
register_statistic("kendall-tau-a", _rank_pool)
register_statistic("kendall-tau-b", _rank_pool)
register_statistic("whitened-cosine", _whitened_pool(centred=False), whole_rdms_only=True)
register_statistic("whitened-pearson", _whitened_pool(centred=True), whole_rdms_only=True)


def statistic(method: str) -> Statistic:
    """The statistic of comparator ``method`` (aliases resolved). A comparator registered only with
    ``register_comparator`` gets the reference path, and rank pooling if it is rank-based."""
    comparator = resolve_method(method)
    found = STATISTICS.get(comparator.name)
    return found if found is not None else Statistic(comparator, _rank_pool if comparator.rank_based else None)


# ----------------------------------------------------------------------------------------------------
# the reference path: the plain comparator on each sample's resampled vectors
# ----------------------------------------------------------------------------------------------------
def _resampled(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(r, P) vectors → (r, Σw): pair p repeated w_p times, pairs of weight 0 left out."""
    keep = w > 0
    return np.repeat(v[:, keep], w[keep].astype(np.intp), axis=1)


def _require_whole(stat: Statistic, w: np.ndarray, message: str) -> None:
    if stat.whole_rdms_only and not np.all(w == 1):
        raise NeuroError(message)


def _similarity_of_sample(stat: Statistic, x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(k, s) on one sample of weights ``w`` (P,)."""
    if len(x) == 0:                          # a noise ceiling alone
        return np.empty((0, len(y)))
    _require_whole(stat, w, _RESAMPLED_WHOLE_ONLY)
    return stat.comparator.fn(_resampled(x, w), _resampled(y, w))


def _ceiling_of_sample(stat: Statistic, y: np.ndarray, w: np.ndarray,
                       copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s,) lower and upper on one sample: each subject present against the mean of the pooled vectors of
    the others (each subject weighted by its copies) / of all; NaN for subjects absent, or alone for lower."""
    if stat.pool is None:
        raise NeuroError(f"no pooling rule for {stat.name!r}")
    _require_whole(stat, w, _CEILING_WHOLE_ONLY)
    v = _resampled(y, w)
    pooled = stat.pool(v)
    present = np.flatnonzero(copies)
    total, n = copies[present] @ pooled[present], copies.sum()
    lower, upper = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for i in present:
        upper[i] = stat.comparator.fn(v[i:i + 1], total[None] / n)[0, 0]
        if n > copies[i]:
            others = (total - copies[i] * pooled[i]) / (n - copies[i])
            lower[i] = stat.comparator.fn(v[i:i + 1], others[None])[0, 0]
    return lower, upper


def reference_evaluate(stat: Statistic, x: np.ndarray, y: np.ndarray, samples: Samples,
                       copies: np.ndarray | None = None) -> Evaluation:
    """``FastPath.evaluate`` one sample at a time, by the plain comparator."""
    pairs = samples.pairs
    similarity = np.stack([_similarity_of_sample(stat, x if x.ndim == 2 else x[:, b], y, w)
                           for b, w in enumerate(pairs)], axis=-1)
    if copies is None:
        return Evaluation(similarity)
    terms = [_ceiling_of_sample(stat, y, w, c) for w, c in zip(pairs, copies)]
    return Evaluation(similarity, np.array([lo for lo, _ in terms]), np.array([up for _, up in terms]))


# ----------------------------------------------------------------------------------------------------
# what the inference calls
# ----------------------------------------------------------------------------------------------------
def batch_size(stat: Statistic, chunk: int, n_pairs: int) -> int:
    return stat.fast.batch_size(chunk, n_pairs) if stat.fast is not None else chunk


def evaluate(stat: Statistic, x: np.ndarray, y: np.ndarray, samples: Samples,
             copies: np.ndarray | None = None) -> Evaluation:
    """Every model with every subject on every sample and, with ``copies``, the noise-ceiling terms
    (NaN with fewer than 2 subjects: nobody to pool)."""
    if copies is not None and len(y) < 2:
        nan = np.full((len(samples), len(y)), np.nan)
        return Evaluation(evaluate(stat, x, y, samples).similarity, nan, nan)
    if stat.fast is None:
        return reference_evaluate(stat, x, y, samples, copies)
    return stat.fast.evaluate(x, y, samples, copies)


def ceiling_means(evaluation: Evaluation, copies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B,) lower and upper noise ceiling per sample: the means over the subjects present, copies of a
    subject counting once (as rsatoolbox's leave-one-subject-out over a resampled set counts them)."""
    present = copies > 0
    counted = present & np.isfinite(evaluation.lower)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(counted, evaluation.lower, 0).sum(1) / counted.sum(1),
                np.where(present, evaluation.upper, 0).sum(1) / present.sum(1))
