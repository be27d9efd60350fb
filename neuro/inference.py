"""Inference on RDM comparisons: noise ceilings, bootstrap, permutation tests, FDR.

Statistic: the comparison of a model RDM with each subject's brain RDM, averaged over subjects
(Nili et al. 2014). Every comparator is computed on weighted samples of condition pairs through its
``neuro.comparators.Statistic`` (a reference path and at most one fast path that agree): pairs of a
resampled condition with its own copy are left out, as rsatoolbox does, so the same draws give the
same numbers (checked in the tests).

- ``noise_ceiling``: lower bound = mean similarity of each subject with the pooled RDM of the others,
  upper bound = with the pooled RDM of all (pooling suited to the comparator: z-scores for Pearson,
  ranks for rank methods, unit RMS for cosine, whitened norm for whitened methods).
- ``bootstrap`` (``neuro.bootstrapping``): over conditions (generalises to new stimuli), subjects (to
  new subjects) or both.
- ``permutation_test``: condition-label randomisation of the model RDM (Kriegeskorte et al. 2008).
- ``fdr``: Benjamini–Hochberg adjusted p-values across layers × ROIs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bootstrapping import Bootstrap, Progress, bootstrap
from .comparators import ceiling_means, evaluate, statistic
from .compare import compare
from .errors import NeuroError
from .rdms import RDMs
from .samples import Samples

__all__ = ["Bootstrap", "PermutationTest", "bootstrap", "fdr", "noise_ceiling", "permutation_test", "subject_tests"]


def noise_ceiling(brain: RDMs, method: str = "spearman") -> tuple[float, float]:
    """(lower, upper) noise ceiling of the subject RDMs in ``brain`` for comparator ``method``."""
    if brain.n_rdm < 2:
        raise NeuroError("a noise ceiling needs RDMs of at least 2 subjects")
    y = brain.vectors
    copies = np.ones((1, brain.n_rdm))
    result = evaluate(statistic(method), y[:0], y, Samples.every_condition_once(brain.n_cond, np.isfinite(y).all(0)),
                      copies)
    lo, up = ceiling_means(result, copies)
    return float(lo[0]), float(up[0])


# ----------------------------------------------------------------------------------------------------
# permutation test, subject-level tests, FDR
# ----------------------------------------------------------------------------------------------------
@dataclass
class PermutationTest:
    observed: np.ndarray          # (models,)
    null: np.ndarray              # (n × models)
    p: np.ndarray                 # one-sided: P(null ≥ observed), +1 corrected; NaN where observed is undefined


def permutation_test(models: RDMs, brain: RDMs, method: str = "spearman", n: int = 1000, seed: int = 0,
                     chunk: int = 64, progress: Progress = None) -> PermutationTest:
    """Condition-label randomisation: the model RDMs' rows and columns permuted together."""
    if list(models.conditions) != list(brain.conditions):
        models = models.subset_conditions(brain.conditions)
    rng = np.random.default_rng(seed)
    observed = compare(models, brain, method).mean(1)
    stat = statistic(method)
    model_m = models.matrices()
    a, b = np.triu_indices(models.n_cond, 1)
    valid_base = np.isfinite(brain.vectors).all(0) & np.isfinite(models.vectors).all(0)
    null = np.empty((n, models.n_rdm))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        perms = np.stack([rng.permutation(models.n_cond) for _ in range(stop - start)])
        x = model_m[:, perms[:, a], perms[:, b]]                          # (k, B, P): relabelled models
        samples = Samples.every_condition_once(models.n_cond, valid_base & np.isfinite(x).all(0))
        null[start:stop] = evaluate(stat, x, brain.vectors, samples).similarity.mean(1).T
        if progress is not None:
            progress(stop, n)
    return PermutationTest(observed, null, permutation_p(observed, null))


def permutation_p(observed: np.ndarray, null: np.ndarray) -> np.ndarray:
    """One-sided P(null ≥ observed) with the +1 correction, over the permutations whose statistic is
    defined. An undefined observed statistic (NaN: a constant RDM, no shared finite pairs) has an
    undefined p-value, never 1 / (n + 1); so has one whose every permutation is undefined."""
    defined = np.isfinite(null)
    at_least = (defined & (null >= observed[None] - 1e-12)).sum(0)
    count = defined.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (1 + at_least) / (1 + count)
    return np.where(np.isfinite(observed) & (count > 0), p, np.nan)


def fdr(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same shape as the input; NaNs stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = np.isfinite(flat)
    q = np.full_like(flat, np.nan)
    vals = flat[ok]
    if vals.size and (vals.min() < 0 or vals.max() > 1):
        raise NeuroError(f"p-values must lie in [0, 1], got values in [{vals.min():.3g}, {vals.max():.3g}]")
    m = len(vals)
    if m:
        order = np.argsort(vals)
        ranked = vals[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.clip(ranked, 0, 1)
        q[ok] = out
    return q.reshape(p.shape)


def subject_tests(models: RDMs, brain: RDMs, method: str = "spearman") -> dict[str, np.ndarray]:
    """Across subjects: mean, SEM, one-sample t-test and Wilcoxon signed-rank of the similarities > 0."""
    from scipy.stats import ttest_1samp, wilcoxon
    per = compare(models, brain, method)                                   # (k, s)
    out = {"mean": per.mean(1), "sem": per.std(1, ddof=1) / np.sqrt(per.shape[1]) if per.shape[1] > 1
           else np.full(per.shape[0], np.nan)}
    if per.shape[1] >= 2:
        out["t_p"] = ttest_1samp(per, 0, axis=1, alternative="greater").pvalue
        out["wilcoxon_p"] = np.array([wilcoxon(r, alternative="greater").pvalue if np.any(r != 0) else 1.0
                                      for r in per])
    return out
