"""neuro.comparators: each comparator's fast path gives the numbers of its reference path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neuro.comparators import STATISTICS, evaluate, reference_evaluate, statistic
from neuro.compare import COMPARATORS
from neuro.samples import Samples

FAST = sorted(name for name, stat in STATISTICS.items() if stat.fast is not None)

# The fast paths add the same terms as the reference path in another order and grouping (weighted
# moments, or ranks from cumulative weights, instead of the resampled vectors), so they differ by
# rounding alone: a few ulps per term, at most about P·eps ≈ 1e-14 over the P = 66 pairs here (Pearson's
# moments are taken after shifting each RDM to its mean, so an offset does not magnify that). 1e-10 leaves
# orders of magnitude of headroom, while a slip in the algebra (a weight, a tie's rank, a self-pair
# counted, a subject's copies) shows at 1e-3 or more. The absolute 1e-12 only matters for values near 0.
RTOL, ATOL = 1e-10, 1e-12
N_COND, N_SAMPLES = 12, 9


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _rdms(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two model and five subject RDM vectors with ties (a categorical model, a coarse subject) and
    missing pairs."""
    p = N_COND * (N_COND - 1) // 2
    x = np.stack([rng.uniform(size=p), np.round(rng.uniform(size=p) * 3)])
    y = 1.0 + rng.uniform(size=(5, p))
    y[1] = np.round(y[1] * 4) / 4
    x[0, 7] = np.nan
    y[2, [3, 40]] = np.nan
    return x, y


def _condition_counts(rng: np.random.Generator) -> np.ndarray:
    """(B, n) counts of condition resamples (repeated conditions), each with at least 3 distinct ones."""
    counts = np.stack([np.bincount(rng.integers(0, N_COND, N_COND), minlength=N_COND) for _ in range(N_SAMPLES)])
    counts[0] = 1                                                   # the sample of every condition once
    assert ((counts > 0).sum(1) >= 3).all()
    return counts.astype(np.float64)


def _subject_copies(rng: np.random.Generator) -> np.ndarray:
    """(B, 5) copies of each subject: every subject once, one subject alone, then random resamples."""
    copies = np.stack([np.bincount(rng.integers(0, 5, 5), minlength=5) for _ in range(N_SAMPLES)])
    copies[0], copies[1] = 1, [0, 0, 5, 0, 0]
    return copies.astype(np.float64)


def _assert_same(fast, reference, copies: np.ndarray) -> None:
    np.testing.assert_allclose(fast.similarity, reference.similarity, rtol=RTOL, atol=ATOL)
    if copies is None:
        return
    present = copies > 0                                  # the terms of absent subjects are not used
    np.testing.assert_allclose(fast.lower[present], reference.lower[present], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(fast.upper[present], reference.upper[present], rtol=RTOL, atol=ATOL)
    assert np.isnan(fast.lower[1, 2]) and np.isfinite(fast.upper[1, 2])       # a subject alone: no others


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_reference_path_on_resampled_conditions_and_subjects(name):
    """The bootstrap's case: RDMs shared by every sample, conditions and subjects drawn with repeats."""
    rng = np.random.default_rng(1)
    x, y = _rdms(rng)
    samples = Samples(_condition_counts(rng), np.isfinite(x).all(0) & np.isfinite(y).all(0))
    copies = _subject_copies(rng)
    stat = STATISTICS[name]
    _assert_same(stat.fast.evaluate(x, y, samples, copies), reference_evaluate(stat, x, y, samples, copies), copies)


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_reference_path_on_models_given_per_sample(name):
    """The permutation test's case: other model vectors in every sample, the missing pairs moving with them
    (and, beyond what the test needs, resampled conditions too)."""
    rng = np.random.default_rng(2)
    _, y = _rdms(rng)
    x = np.stack([_rdms(rng)[0] for _ in range(N_SAMPLES)], axis=1)             # (2, B, P)
    valid = np.isfinite(x).all(0) & np.isfinite(y).all(0)                         # (B, P)
    stat = STATISTICS[name]
    for counts in (np.ones((N_SAMPLES, N_COND)), _condition_counts(rng)):
        samples = Samples(counts, valid)
        _assert_same(stat.fast.evaluate(x, y, samples), reference_evaluate(stat, x, y, samples), None)


def test_every_comparator_has_one_statistic_and_the_fast_ones_are_named():
    assert set(STATISTICS) == set(COMPARATORS)
    assert FAST == ["cosine", "pearson", "rho-a", "spearman"]
    assert all(stat.pool is not None for stat in STATISTICS.values())
    assert statistic("corr") is STATISTICS["pearson"] and statistic("tau-a") is STATISTICS["kendall-tau-a"]


def test_evaluate_takes_the_fast_path_and_otherwise_the_reference():
    rng = np.random.default_rng(3)
    x, y = _rdms(rng)
    samples = Samples(_condition_counts(rng), np.isfinite(x).all(0) & np.isfinite(y).all(0))
    for name in ("spearman", "kendall-tau-b"):
        stat = STATISTICS[name]
        got = evaluate(stat, x, y, samples).similarity
        np.testing.assert_allclose(got, reference_evaluate(stat, x, y, samples).similarity, rtol=RTOL, atol=ATOL)
