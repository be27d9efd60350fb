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
from .rdms import RDMs, condition_difference

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


_FAST = ("cosine", "pearson", "spearman", "rho-a")


def _dense_codes(matrices: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes preserving the order (and ties) of every entry of each matrix: (R, n, n), count."""
    # NaN (a missing pair) would rank as NaN and break the integer codes: it ranks last instead; the
    # callers leave every non-finite entry out of the comparison anyway
    flat = np.where(np.isfinite(matrices), matrices, np.inf).reshape(len(matrices), -1)
    codes = np.stack([rankdata(row, method="dense") - 1 for row in flat]).astype(np.int64)
    return codes.reshape(matrices.shape), int(codes.max()) + 1


def _codes_rank(codes: np.ndarray, valid: np.ndarray, n_codes: int) -> np.ndarray:
    """Average ranks (1-based) among the valid entries of integer codes (R, B, P), by counting: no sort."""
    rows = codes.shape[0] * codes.shape[1]
    index = np.arange(rows).reshape(codes.shape[0], codes.shape[1], 1) * n_codes + codes
    mask = np.broadcast_to(valid, codes.shape)
    counts = np.bincount(index[mask], minlength=rows * n_codes)
    less = np.cumsum(counts) - counts
    less -= np.repeat(less[::n_codes], n_codes)              # restart the count in every row
    return less[index] + (counts[index] + 1) / 2.0


def _unit(name: str, x: np.ndarray, valid: np.ndarray, ranks: np.ndarray | None = None) -> np.ndarray:
    """Vectors (R, B, P), zero off ``valid``, whose inner products are the comparator's values."""
    w = valid.astype(np.float64)
    if name in ("spearman", "rho-a"):
        x = _masked_rank(x, valid) if ranks is None else ranks
    if name == "cosine":
        v = x * w
    else:
        v = _masked_centre(x, valid)
    if name == "rho-a":
        m = w.sum(-1, keepdims=True)
        return v * np.sqrt(12.0 / (m ** 3 - m))
    with np.errstate(invalid="ignore", divide="ignore"):
        return v / np.sqrt((v * v).sum(-1, keepdims=True))


def _pool_prepare_fast(name: str, x: np.ndarray, valid: np.ndarray, ranks: np.ndarray | None) -> np.ndarray:
    w = valid.astype(np.float64)
    cnt = w.sum(-1, keepdims=True)
    if name in ("spearman", "rho-a"):
        return ranks * w
    if name == "cosine":
        return x * w / np.sqrt((x * x * w).sum(-1, keepdims=True) / cnt)
    c = _masked_centre(x, valid)
    return c / np.sqrt((c * c).sum(-1, keepdims=True) / cnt)


def _ceiling_fast(name: str, y: np.ndarray, valid: np.ndarray, y_units: np.ndarray, y_ranks: np.ndarray | None,
                  groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Noise ceiling per sample for the inner-product comparators, reusing the subjects' unit vectors."""
    s = y.shape[0]
    if s < 2:
        nan = np.full(y.shape[1], np.nan)
        return nan, nan
    prepared = _pool_prepare_fast(name, y, valid, y_ranks)
    total = prepared.sum(0)
    pooled = _unit(name, (total / s)[None], valid)[0]
    upper = np.einsum("sbp,bp->sb", y_units, pooled)
    lower = np.empty_like(upper)
    for i in range(s):
        if groups is None:
            others = (total - prepared[i]) / (s - 1)
            lower[i] = np.einsum("bp,bp->b", y_units[i], _unit(name, others[None], valid)[0])
        else:
            same = groups == groups[:, i:i + 1]
            n_other = (~same).sum(1)
            rest = total - np.einsum("bs,sbp->bp", same.astype(np.float64), prepared)
            with np.errstate(invalid="ignore", divide="ignore"):
                others = rest / n_other[:, None]
                val = np.einsum("bp,bp->b", y_units[i], _unit(name, others[None], valid)[0])
            lower[i] = np.where(n_other > 0, val, np.nan)
    return _combine_ceiling(lower, upper, groups)


def _moment_similarity(matrices: np.ndarray, counts: np.ndarray, centred: bool) -> np.ndarray:
    """Pearson (``centred``) or cosine similarity between all RDMs of ``matrices`` (R, n, n) on each
    resampled condition set, without building the resampled vectors.

    A resample with condition counts c has every pair (i, j), i ≠ j, c_i·c_j times (pairs of a condition
    with its own copy are left out), so a sum over its pairs is ½ cᵀ F c with F's diagonal zero. Every
    moment needed is such a sum: (B, n) counts times (n, n) matrices."""
    r = matrices.shape[0]
    mats = matrices.copy()
    idx = np.arange(mats.shape[1])
    mats[:, idx, idx] = 0.0

    def pair_sum(f: np.ndarray) -> np.ndarray:
        return 0.5 * np.einsum("bi,bi->b", counts @ f, counts)

    m = 0.5 * (counts.sum(1) ** 2 - (counts ** 2).sum(1))
    second = np.empty((counts.shape[0], r, r))
    for a in range(r):
        for b in range(a, r):
            second[:, a, b] = second[:, b, a] = pair_sum(mats[a] * mats[b])
    if centred:
        first = np.stack([pair_sum(mats[a]) for a in range(r)], axis=1) / m[:, None]     # (B, R) means
        second = second / m[:, None, None] - first[:, :, None] * first[:, None, :]
    diag = np.sqrt(np.einsum("bii->bi", second))
    with np.errstate(invalid="ignore", divide="ignore"):
        return second / diag[:, :, None] / diag[:, None, :]


def _ceiling_from_similarity(sim: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise ceiling per sample from the subjects' similarity matrices (B, S, S) for comparators whose
    pooled RDM is a weighted mean of normalised subject RDMs (Pearson: z-scores; cosine: unit RMS):
    sim(y_i, Σ w_t u_t) = Σ w_t sim_it / sqrt(Σ w_t w_u sim_tu). ``weights`` (B, S): copies per row."""
    def against(w: np.ndarray) -> np.ndarray:                       # w (B, S) → (B, S)
        num = np.einsum("bt,bit->bi", w, sim)
        den = np.sqrt(np.einsum("bt,bu,btu->b", w, w, sim))
        with np.errstate(invalid="ignore", divide="ignore"):
            return num / den[:, None]

    upper = against(weights)                                         # (B, S)
    lower = np.empty_like(upper)
    for i in range(sim.shape[1]):
        w = weights.copy()
        w[:, i] = 0.0
        lower[:, i] = against(w)[:, i]
    return lower, upper


def _whitened_with_missing(name: str, x: np.ndarray, y: np.ndarray, ok: np.ndarray) -> np.ndarray:
    if ok.all():
        return compare(x, y, name)
    raise NeuroError("whitened comparators cannot be bootstrapped over conditions (resampled conditions leave "
                     "pairs undefined); use over='subjects' (robust-kd: --bootstrap-over subjects), or a pearson/cosine/rank comparator")


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
            # a resample of copies of one subject has no others: a stand-in (the subject itself) keeps the
            # comparators from failing on an empty pool, and its value is dropped below
            others = np.where(n_other[:, None] > 0, rest / np.maximum(n_other, 1)[:, None], subjects[i])
            val = _batched_stat(method, subjects[i:i + 1], others[None], valid)[0, 0]
            lower[i] = np.where(n_other > 0, val, np.nan)
    return _combine_ceiling(lower, upper, groups)


def _combine_ceiling(lower: np.ndarray, upper: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
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
            raise NeuroError("model and brain RDMs are over different conditions "
                             f"({condition_difference(models.conditions, brain.conditions)}); subset them to a common set")
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
    name = resolve_method(method).name
    if name in ("pearson", "cosine") and np.isfinite(model_m).all() and np.isfinite(brain_m).all():
        return _bootstrap_moments(name, model_m, brain_m, n, over, ceiling, condition_indices, subject_indices,
                                  chunk, progress)
    if name in ("spearman", "rho-a") and np.isfinite(model_m).all() and np.isfinite(brain_m).all():
        return _bootstrap_ranks(name, model_m, brain_m, n, over, ceiling, condition_indices, subject_indices,
                                32, progress)  # small chunks stay in cache
    fast = name in _FAST
    if fast and resolve_method(method).rank_based:
        model_codes, model_nc = _dense_codes(model_m)
        brain_codes, brain_nc = _dense_codes(brain_m)
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
        y_ranks = None
        if fast:
            x_ranks = None
            if resolve_method(method).rank_based:
                x_ranks = _codes_rank(model_codes[:, a, b], valid, model_nc)
                y_ranks = _codes_rank(brain_codes[:, a, b], valid, brain_nc)
            x_units, y_units = _unit(name, x, valid, x_ranks), _unit(name, y_all, valid, y_ranks)
            per_subject = np.einsum("kbp,sbp->ksb", x_units, y_units, optimize=True)
        else:
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
                pick = lambda arr: np.stack([arr[si[j], j] for j in range(stop - start)], axis=1)  # noqa: E731
                ys = pick(y_all)                                             # (s', B, P)
                lo, up = _ceiling_fast(name, ys, valid, pick(y_units), None if y_ranks is None else pick(y_ranks),
                                       si) if fast else _ceiling_batched(method, ys, valid, groups=si)
            else:
                lo, up = _ceiling_fast(name, y_all, valid, y_units, y_ranks, None) if fast else \
                    _ceiling_batched(method, y_all, valid)
            ceil[start:stop, 0] = np.where(enough, lo, np.nan)
            ceil[start:stop, 1] = np.where(enough, up, np.nan)
        if progress is not None:
            progress(stop, n)
    return Bootstrap(samples, over, method, ceil, condition_indices, subject_indices)


def _bootstrap_moments(name: str, model_m: np.ndarray, brain_m: np.ndarray, n: int, over: str, ceiling: bool,
                       condition_indices: np.ndarray | None, subject_indices: np.ndarray | None, chunk: int,
                       progress: Progress) -> Bootstrap:
    """The bootstrap for Pearson and cosine from pair-sum moments: same numbers, no resampled vectors."""
    k, s, n_cond = model_m.shape[0], brain_m.shape[0], brain_m.shape[1]
    all_m = np.concatenate([model_m, brain_m])
    samples = np.full((n, k), np.nan)
    ceil = np.full((n, 2), np.nan) if ceiling else None
    step = max(chunk, 256)
    for start in range(0, n, step):
        stop = min(n, start + step)
        if condition_indices is not None:
            ci = condition_indices[start:stop]
            counts = np.zeros((stop - start, n_cond))
            np.add.at(counts, (np.arange(stop - start)[:, None], ci), 1.0)
            enough = (counts > 0).sum(1) >= 3
        else:
            counts = np.ones((stop - start, n_cond))
            enough = np.ones(stop - start, bool)
        sim = _moment_similarity(all_m, counts, centred=name == "pearson")      # (B, k+s, k+s)
        model_subject = sim[:, :k, k:]                                           # (B, k, s)
        subject_subject = sim[:, k:, k:]
        if subject_indices is not None:
            si = subject_indices[start:stop]
            weights = np.zeros((stop - start, s))
            np.add.at(weights, (np.arange(stop - start)[:, None], si), 1.0)
        else:
            weights = np.ones((stop - start, s))
        stat = np.einsum("bks,bs->bk", model_subject, weights) / weights.sum(1, keepdims=True)
        stat[~enough] = np.nan
        samples[start:stop] = stat
        if ceiling and s >= 2:
            lower, upper = _ceiling_from_similarity(subject_subject, weights)  # per unique subject
            present = weights > 0
            with np.errstate(invalid="ignore"):
                lo = np.nansum(np.where(present, lower, 0), 1) / np.sum(present & np.isfinite(lower), 1)
                up = np.sum(np.where(present, upper, 0), 1) / present.sum(1)
            if subject_indices is None:       # every subject once: the plain means
                lo, up = np.nanmean(lower, 1), upper.mean(1)
            ceil[start:stop, 0] = np.where(enough, lo, np.nan)
            ceil[start:stop, 1] = np.where(enough, up, np.nan)
        if progress is not None:
            progress(stop, n)
    return Bootstrap(samples, over, name, ceil, condition_indices, subject_indices)


def _weighted_ranks_sorted(keys_sorted: np.ndarray, w_sorted: np.ndarray) -> np.ndarray:
    """Average ranks of entries with multiplicities ``w`` (rows sorted by key): a tie group occupying
    expanded positions L+1 … L+W gets L + (W + 1)/2."""
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


def _weighted_ranks(values: np.ndarray, w: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Ranks of ``values`` (B, P) in the expanded vector where entry p appears w[b, p] times."""
    if order is None:
        order = np.argsort(values, axis=1, kind="stable")
    elif order.ndim == 1:
        order = np.broadcast_to(order, values.shape)
    keys = np.take_along_axis(values, order, 1)
    ranks_sorted = _weighted_ranks_sorted(keys, np.take_along_axis(w, order, 1))
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


def _ranks_fixed(plan: tuple[np.ndarray, np.ndarray, np.ndarray], w: np.ndarray) -> np.ndarray:
    order, start, end = plan
    ws = w[:, order]
    cs = np.cumsum(ws, axis=1)
    before = cs[:, start] - ws[:, start]
    ranks_sorted = before + (cs[:, end] - before + 1.0) / 2.0
    out = np.empty_like(ranks_sorted)
    out[:, order] = ranks_sorted
    return out


def _weighted_units(name: str, ranks: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(..., B, P) rank vectors → vectors whose w-weighted inner products are Spearman / rho-a."""
    m = w.sum(-1, keepdims=True)
    d = ranks - (ranks * w).sum(-1, keepdims=True) / m
    if name == "rho-a":
        return d * np.sqrt(12.0 / (m ** 3 - m))
    with np.errstate(invalid="ignore", divide="ignore"):
        return d / np.sqrt((d * d * w).sum(-1, keepdims=True))


def _bootstrap_ranks(name: str, model_m: np.ndarray, brain_m: np.ndarray, n: int, over: str, ceiling: bool,
                     condition_indices: np.ndarray | None, subject_indices: np.ndarray | None, chunk: int,
                     progress: Progress) -> Bootstrap:
    """The bootstrap for Spearman and rho-a on the distinct condition pairs, each weighted by how often
    the resample holds it (c_i·c_j): the ranks of the resampled vector without building it."""
    k, s, n_cond = model_m.shape[0], brain_m.shape[0], brain_m.shape[1]
    iu = np.triu_indices(n_cond, 1)
    model_v, brain_v = model_m[:, iu[0], iu[1]], brain_m[:, iu[0], iu[1]]
    model_plans = [_rank_plan(v) for v in model_v]
    brain_plans = [_rank_plan(v) for v in brain_v]
    samples = np.full((n, k), np.nan)
    ceil = np.full((n, 2), np.nan) if ceiling else None
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        bsz = stop - start
        if condition_indices is not None:
            counts = np.zeros((bsz, n_cond))
            np.add.at(counts, (np.arange(bsz)[:, None], condition_indices[start:stop]), 1.0)
        else:
            counts = np.ones((bsz, n_cond))
        enough = (counts > 0).sum(1) >= 3
        w = counts[:, iu[0]] * counts[:, iu[1]]                                   # (B, P)
        model_r = np.stack([_ranks_fixed(plan, w) for plan in model_plans])
        brain_r = np.stack([_ranks_fixed(plan, w) for plan in brain_plans])
        mu, bu = _weighted_units(name, model_r, w), _weighted_units(name, brain_r, w)
        per_subject = np.einsum("kbp,sbp,bp->ksb", mu, bu, w, optimize=True)     # (k, s, B)
        if subject_indices is not None:
            weights = np.zeros((bsz, s))
            np.add.at(weights, (np.arange(bsz)[:, None], subject_indices[start:stop]), 1.0)
        else:
            weights = np.ones((bsz, s))
        stat = np.einsum("ksb,bs->bk", per_subject, weights) / weights.sum(1, keepdims=True)
        stat[~enough] = np.nan
        samples[start:stop] = stat
        if ceiling and s >= 2:
            total = np.einsum("bs,sbp->bp", weights, brain_r)

            def pool_units(pool: np.ndarray) -> np.ndarray:
                keys = np.rint(2 * pool).astype(np.int64)     # sums of half-integer ranks: exact integers
                if keys.max() < 2 ** 16:
                    keys = keys.astype(np.uint16)              # numpy's stable argsort is a radix sort here
                return _weighted_units(name, _weighted_ranks(keys, w), w)

            every = pool_units(total)
            upper = np.einsum("sbp,bp,bp->bs", bu, every, w)
            lower = np.stack([np.einsum("bp,bp,bp->b", bu[i], pool_units(total - weights[:, i:i + 1] * brain_r[i]), w)
                              for i in range(s)], 1)
            lower[weights >= weights.sum(1, keepdims=True)] = np.nan                        # nobody else left
            present = weights > 0
            with np.errstate(invalid="ignore"):
                lo = np.nansum(np.where(present, lower, 0), 1) / np.sum(present & np.isfinite(lower), 1)
                up = np.sum(np.where(present, upper, 0), 1) / present.sum(1)
            ceil[start:stop, 0] = np.where(enough, lo, np.nan)
            ceil[start:stop, 1] = np.where(enough, up, np.nan)
        if progress is not None:
            progress(stop, n)
    return Bootstrap(samples, over, name, ceil, condition_indices, subject_indices)


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
