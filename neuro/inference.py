"""Inference on RDM comparisons: noise ceilings, bootstrap, permutation tests, FDR.

Statistic: the comparison of a model RDM with each subject's brain RDM, averaged over subjects
(Nili et al. 2014). Everything here is vectorised over bootstrap samples: one sample is a set of
condition indices drawn with replacement (and/or of subjects); pairs of a condition with its own copy
are left out, as rsatoolbox does, so the same indices give the same numbers (checked in the tests).

- ``noise_ceiling``: lower bound = mean similarity of each subject with the pooled RDM of the others,
  upper bound = with the pooled RDM of all (pooling suited to the comparator: z-scores for Pearson,
  ranks for rank methods, unit RMS for cosine, whitened norm for whitened methods).
- ``bootstrap``: over conditions (generalises to new stimuli), subjects (to new subjects) or both.
- ``permutation_test``: condition-label randomisation of the model RDM (Kriegeskorte et al. 2008).
- ``fdr``: Benjamini–Hochberg adjusted p-values across layers × ROIs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.stats import rankdata

from .compare import compare, double_centred, resolve_method
from .errors import NeuroError
from .rdms import RDMs

Progress = Callable[[int, int], None] | None


# ----------------------------------------------------------------------------------------------------
# masked, batched comparisons: X (k, B, P), Y (s, B, P), valid (B, P) -> (k, s, B)
# ----------------------------------------------------------------------------------------------------
def _masked_rank(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return rankdata(np.where(valid, x, np.inf), axis=-1)


def _masked_centre(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    w = valid.astype(np.float64)
    mean = (x * w).sum(-1, keepdims=True) / w.sum(-1, keepdims=True)
    return (x - mean) * w


def _masked_cosine(x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    w = valid.astype(np.float64)
    x, y = x * w, y * w
    num = np.einsum("kbp,sbp->ksb", x, y, optimize=True)
    nx = np.sqrt(np.einsum("kbp,kbp->kb", x, x))
    ny = np.sqrt(np.einsum("sbp,sbp->sb", y, y))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / nx[:, None] / ny[None]


def _batched_stat(method: str, x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    name = resolve_method(method).name
    if name == "cosine":
        return _masked_cosine(x, y, valid)
    if name == "pearson":
        return _masked_cosine(_masked_centre(x, valid), _masked_centre(y, valid), valid)
    if name == "spearman":
        return _masked_cosine(_masked_centre(_masked_rank(x, valid), valid),
                              _masked_centre(_masked_rank(y, valid), valid), valid)
    if name == "rho-a":
        rx = _masked_centre(_masked_rank(x, valid), valid)
        ry = _masked_centre(_masked_rank(y, valid), valid)
        m = valid.sum(-1).astype(np.float64)
        return 12.0 * np.einsum("kbp,sbp->ksb", rx, ry, optimize=True) / (m ** 3 - m)
    # the rest (Kendall's tau, whitened comparators) one sample at a time
    out = np.empty((x.shape[0], y.shape[0], x.shape[1]))
    for b in range(x.shape[1]):
        ok = valid[b]
        out[:, :, b] = compare(x[:, b, ok], y[:, b, ok], name) if not name.startswith("whitened") else \
            _whitened_with_missing(name, x[:, b], y[:, b], ok)
    return out


def _whitened_with_missing(name: str, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    if ok.all():
        return compare(x, y, name)
    raise NeuroError("whitened comparators cannot be bootstrapped over conditions (resampled conditions leave "
                     "pairs undefined); use over='subjects', or a pearson/cosine/rank comparator")


# ----------------------------------------------------------------------------------------------------
# pooling and noise ceiling
# ----------------------------------------------------------------------------------------------------
def _pool_prepare(method: str, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Subject vectors (s, B, P) made comparable before averaging into a group RDM."""
    name = resolve_method(method).name
    w = valid.astype(np.float64)
    cnt = w.sum(-1, keepdims=True)
    if name == "cosine":
        return x * w / np.sqrt((x * x * w).sum(-1, keepdims=True) / cnt)
    if name == "pearson":
        c = _masked_centre(x, valid)
        return c / np.sqrt((c * c).sum(-1, keepdims=True) / cnt)
    if resolve_method(method).rank_based:
        return _masked_rank(x, valid) * w
    if name.startswith("whitened"):
        if not valid.all():
            raise NeuroError("whitened comparators need complete RDMs for a noise ceiling")
        flat = x.reshape(-1, x.shape[-1])
        if name == "whitened-pearson":
            flat = flat - flat.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(double_centred(flat), axis=1)
        return (flat / norms[:, None]).reshape(x.shape)
    raise NeuroError(f"no pooling rule for {method!r}")


def _ceiling_batched(method: str, subjects: np.ndarray, valid: np.ndarray,
                     groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper noise ceiling per sample. ``subjects`` (s, B, P); ``groups`` (B, s) says which rows are
    copies of the same subject (a subject bootstrap): leave-one-out leaves out all copies."""
    s = subjects.shape[0]
    if s < 2:
        nan = np.full(subjects.shape[1], np.nan)
        return nan, nan
    prepared = _pool_prepare(method, subjects, valid)
    total = prepared.sum(0)                                           # (B, P)
    upper = _batched_stat(method, subjects, (total / s)[None], valid)[:, 0]     # (s, B)
    lower = np.empty_like(upper)
    for i in range(s):
        if groups is None:
            others = (total - prepared[i]) / (s - 1)
            lower[i] = _batched_stat(method, subjects[i:i + 1], others[None], valid)[0, 0]
        else:
            same = groups == groups[:, i:i + 1]                      # (B, s)
            n_other = (~same).sum(1)
            rest = total - np.einsum("bs,sbp->bp", same.astype(np.float64), prepared)
            with np.errstate(invalid="ignore", divide="ignore"):
                others = rest / n_other[:, None]
            val = _batched_stat(method, subjects[i:i + 1], others[None], valid)[0, 0]
            lower[i] = np.where(n_other > 0, val, np.nan)
    if groups is None:
        return np.nanmean(lower, axis=0), upper.mean(0)
    # copies of one subject count once, as rsatoolbox's leave-one-subject-out over a resampled set does
    copies = (groups[:, :, None] == groups[:, None, :]).sum(2).T.astype(np.float64)     # (s, B)
    weight = 1.0 / copies / (1.0 / copies).sum(0, keepdims=True)
    with np.errstate(invalid="ignore"):
        low = np.where(np.isfinite(lower), lower * weight, 0).sum(0) / np.where(np.isfinite(lower), weight, 0).sum(0)
    return low, (upper * weight).sum(0)


def noise_ceiling(brain: RDMs, method: str = "spearman") -> tuple[float, float]:
    """(lower, upper) noise ceiling of the subject RDMs in ``brain`` for comparator ``method``."""
    if brain.n_rdm < 2:
        raise NeuroError("a noise ceiling needs RDMs of at least 2 subjects")
    valid = np.isfinite(brain.vectors).all(axis=0)[None]
    lo, up = _ceiling_batched(method, np.nan_to_num(brain.vectors)[:, None], valid)
    return float(lo[0]), float(up[0])


# ----------------------------------------------------------------------------------------------------
# bootstrap
# ----------------------------------------------------------------------------------------------------
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
        return np.nanpercentile(self.samples, [tail, 100 - tail], axis=0).T

    def std(self) -> np.ndarray:
        return np.nanstd(self.samples, axis=0, ddof=1)


def _pair_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


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
    if list(models.conditions) != list(brain.conditions):
        if sorted(models.conditions) != sorted(brain.conditions):
            raise NeuroError("model and brain RDMs are over different conditions; subset them to a common set")
        models = models.subset_conditions(brain.conditions)
    resolve_method(method)
    rng = np.random.default_rng(seed)
    n_cond, n_subj = brain.n_cond, brain.n_rdm
    if over in ("conditions", "both"):
        if condition_indices is None:
            condition_indices = rng.integers(0, n_cond, size=(n, n_cond))
        condition_indices = np.sort(np.asarray(condition_indices), axis=1)
        n = condition_indices.shape[0]
    if over in ("subjects", "both"):
        if subject_indices is None:
            subject_indices = rng.integers(0, n_subj, size=(n, n_subj))
        subject_indices = np.asarray(subject_indices)
        n = subject_indices.shape[0]
    if over == "subjects" and ceiling and n_subj < 2:
        ceiling = False

    model_m, brain_m = models.matrices(), brain.matrices()
    samples = np.full((n, models.n_rdm), np.nan)
    ceil = np.full((n, 2), np.nan) if ceiling else None
    full_a, full_b = _pair_index(n_cond)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if condition_indices is not None:
            ci = condition_indices[start:stop]
            a, b = ci[:, full_a], ci[:, full_b]                        # (B, P)
            valid = a != b
            enough = np.array([len(np.unique(r)) >= 3 for r in ci])
        else:
            a = np.broadcast_to(full_a, (stop - start, len(full_a)))
            b = np.broadcast_to(full_b, (stop - start, len(full_b)))
            valid = np.ones(a.shape, bool)
            enough = np.ones(stop - start, bool)
        valid = valid & np.isfinite(brain_m[:, a, b]).all(0) & np.isfinite(model_m[:, a, b]).all(0)
        x = np.nan_to_num(model_m[:, a, b])                              # (k, B, P)
        y_all = np.nan_to_num(brain_m[:, a, b])                          # (s, B, P)
        per_subject = _batched_stat(method, x, y_all, valid)             # (k, s, B)
        if subject_indices is not None:
            si = subject_indices[start:stop]                             # (B, s')
            picked = np.take_along_axis(per_subject, si.T[None], axis=1)  # (k, s', B)
            stat = picked.mean(1)
        else:
            stat = per_subject.mean(1)
        stat[:, ~enough] = np.nan
        samples[start:stop] = stat.T
        if ceiling:
            if subject_indices is not None:
                ys = np.stack([y_all[si[j], j] for j in range(stop - start)], axis=1)   # (s', B, P)
                lo, up = _ceiling_batched(method, ys, valid, groups=si)
            else:
                lo, up = _ceiling_batched(method, y_all, valid)
            ceil[start:stop, 0] = np.where(enough, lo, np.nan)
            ceil[start:stop, 1] = np.where(enough, up, np.nan)
        if progress is not None:
            progress(stop, n)
    return Bootstrap(samples, over, method, ceil, condition_indices, subject_indices)


# ----------------------------------------------------------------------------------------------------
# permutation test, subject-level tests, FDR
# ----------------------------------------------------------------------------------------------------
@dataclass
class PermutationTest:
    observed: np.ndarray          # (models,)
    null: np.ndarray              # (n × models)
    p: np.ndarray                 # one-sided: P(null ≥ observed), with the +1 correction


def permutation_test(models: RDMs, brain: RDMs, method: str = "spearman", n: int = 1000, seed: int = 0,
                     chunk: int = 64, progress: Progress = None) -> PermutationTest:
    """Condition-label randomisation: the model RDMs' rows and columns permuted together."""
    if list(models.conditions) != list(brain.conditions):
        models = models.subset_conditions(brain.conditions)
    rng = np.random.default_rng(seed)
    observed = compare(models, brain, method).mean(1)
    model_m = models.matrices()
    a, b = _pair_index(models.n_cond)
    valid_base = np.isfinite(brain.vectors).all(0) & np.isfinite(models.vectors).all(0)
    null = np.empty((n, models.n_rdm))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        perms = np.stack([rng.permutation(models.n_cond) for _ in range(stop - start)])
        pa, pb = perms[:, a], perms[:, b]
        x = model_m[:, pa, pb]                                             # (k, B, P)
        valid = np.broadcast_to(valid_base, pa.shape) & np.isfinite(x).all(0)
        y = np.broadcast_to(np.nan_to_num(brain.vectors)[:, None], (brain.n_rdm,) + pa.shape)
        null[start:stop] = _batched_stat(method, np.nan_to_num(x), y, valid).mean(1).T
        if progress is not None:
            progress(stop, n)
    p = (1 + (null >= observed[None] - 1e-12).sum(0)) / (n + 1)
    return PermutationTest(observed, null, p)


def fdr(pvalues: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), same shape as the input; NaNs stay NaN."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.ravel()
    ok = np.isfinite(flat)
    q = np.full_like(flat, np.nan)
    vals = flat[ok]
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
