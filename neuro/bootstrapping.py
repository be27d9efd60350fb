"""The bootstrap of the mean model–subject similarity, over conditions, subjects or both.

A resample of the conditions becomes counts of each condition (``neuro.samples``: weights on the
distinct condition pairs), a resample of the subjects copies of each subject; the comparator is then
computed on batches of samples through its ``Statistic`` (``neuro.comparators``), never on resampled RDMs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .comparators import Statistic, batch_size, ceiling_means, evaluate, statistic
from .errors import NeuroError
from .rdms import RDMs, condition_difference
from .samples import Samples

Progress = Callable[[int, int], None] | None


@dataclass
class Bootstrap:
    """Bootstrap distribution of the mean model–subject similarity: ``samples`` (n × models)."""

    samples: np.ndarray
    over: str
    method: str
    ceiling: np.ndarray | None = None                 # (n × 2): lower, upper per sample
    condition_indices: np.ndarray | None = None
    subject_indices: np.ndarray | None = None
    extras: dict = field(default_factory=dict)

    def ci(self, level: float = 0.95) -> np.ndarray:
        """Percentile interval per model: (models × 2)."""
        tail = (1 - level) / 2 * 100
        with warnings.catch_warnings():                   # a model with no defined sample: NaN, said by the caller
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanpercentile(self.samples, [tail, 100 - tail], axis=0).T

    def std(self) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanstd(self.samples, axis=0, ddof=1)


@dataclass(frozen=True)
class Draws:
    """The resamples of one bootstrap: ``conditions`` (n × conditions) and/or ``subjects`` (n × subjects)
    indices, None for what is not resampled."""

    n: int
    conditions: np.ndarray | None
    subjects: np.ndarray | None


def _draw(over: str, n: int, seed: int, shape: tuple[int, int], condition_indices: np.ndarray | None,
          subject_indices: np.ndarray | None) -> Draws:
    """Draws for ``over`` (conditions first, then subjects, from one generator); given indices replay a
    resampling. ``shape``: (conditions, subjects)."""
    rng = np.random.default_rng(seed)
    if over in ("conditions", "both"):
        if condition_indices is None:
            condition_indices = rng.integers(0, shape[0], size=(n, shape[0]))
        condition_indices = np.sort(np.asarray(condition_indices), axis=1)
        n = condition_indices.shape[0]
    if over in ("subjects", "both"):
        if subject_indices is None:
            subject_indices = rng.integers(0, shape[1], size=(n, shape[1]))
        subject_indices = np.asarray(subject_indices)
        n = subject_indices.shape[0]
    return Draws(n, condition_indices, subject_indices)


def _counts(indices: np.ndarray | None, rows: slice, size: int) -> np.ndarray:
    """(B, size) how often each index is drawn in samples ``rows``; once each when nothing is resampled."""
    if indices is None:
        return np.ones((rows.stop - rows.start, size))
    drawn = np.asarray(indices[rows])
    flat = (np.arange(len(drawn))[:, None] * size + drawn).ravel()
    return np.bincount(flat, minlength=len(drawn) * size).reshape(len(drawn), size).astype(np.float64)


def _aligned(models: RDMs, brain: RDMs) -> RDMs:
    """``models`` over the brain's conditions in the brain's order."""
    if list(models.conditions) == list(brain.conditions):
        return models
    if sorted(models.conditions) != sorted(brain.conditions):
        raise NeuroError("model and brain RDMs are over different conditions "
                         f"({condition_difference(models.conditions, brain.conditions)}); subset them to a common set")
    return models.subset_conditions(brain.conditions)


def _run(stat: Statistic, models: RDMs, brain: RDMs, draws: Draws, ceiling_too: bool, chunk: int,
         progress: Progress) -> tuple[np.ndarray, np.ndarray | None]:
    """Samples (n × models) and, with ``ceiling_too``, the noise ceiling per sample (n × 2)."""
    x, y = models.vectors, brain.vectors
    valid = np.isfinite(x).all(0) & np.isfinite(y).all(0)
    samples = np.full((draws.n, len(x)), np.nan)
    ceil = np.full((draws.n, 2), np.nan) if ceiling_too else None
    step = batch_size(stat, chunk, len(valid))
    for start in range(0, draws.n, step):
        rows = slice(start, min(draws.n, start + step))
        counts = _counts(draws.conditions, rows, brain.n_cond)
        copies = _counts(draws.subjects, rows, brain.n_rdm)
        enough = (counts > 0).sum(1, keepdims=True) >= 3                       # else NaN
        result = evaluate(stat, x, y, Samples(counts, valid), copies if ceiling_too else None)
        mean = np.einsum("ksb,bs->bk", result.similarity, copies) / copies.sum(1, keepdims=True)
        samples[rows] = np.where(enough, mean, np.nan)
        if ceiling_too:
            ceil[rows] = np.where(enough, np.stack(ceiling_means(result, copies), 1), np.nan)
        if progress is not None:
            progress(rows.stop, draws.n)
    return samples, ceil


def bootstrap(models: RDMs, brain: RDMs, method: str = "spearman", n: int = 1000, over: str = "conditions",
              seed: int = 0, ceiling: bool = True, condition_indices: np.ndarray | None = None,
              subject_indices: np.ndarray | None = None, chunk: int = 64, progress: Progress = None) -> Bootstrap:
    """Bootstrap the mean similarity of each model RDM with the subject RDMs.

    ``over``: "conditions", "subjects" or "both". Explicit ``condition_indices`` (n × n_cond) or
    ``subject_indices`` (n × n_subjects) replay a given resampling (e.g. another tool's).
    Samples with fewer than 3 distinct conditions are NaN.
    """
    if over not in ("conditions", "subjects", "both"):
        raise NeuroError(f"over must be 'conditions', 'subjects' or 'both', not {over!r}")
    models = _aligned(models, brain)
    stat = statistic(method)
    draws = _draw(over, n, seed, (brain.n_cond, brain.n_rdm), condition_indices, subject_indices)
    if over == "subjects" and brain.n_rdm < 2:
        ceiling = False
    samples, ceil = _run(stat, models, brain, draws, ceiling, chunk, progress)
    return Bootstrap(samples, over, stat.name, ceil, draws.conditions, draws.subjects)
