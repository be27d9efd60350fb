"""Similarity between RDMs, in a registry.

``compare(a, b, method)`` returns an ``a.n_rdm × b.n_rdm`` array. Methods and their uses:
- ``pearson`` / ``cosine``: linear; cosine when zero dissimilarity is meaningful (crossnobis RDMs).
- ``spearman``; ``rho-a`` (Spearman's rho-a: the rank correlation expected under random tie-breaking,
  fast, recommended for models that predict ties); ``kendall-tau-a`` (Nili et al. 2014: for
  categorical models with many ties); ``kendall-tau-b``.
- ``whitened-cosine`` / ``whitened-pearson``: cosine / Pearson after accounting for the covariance
  of distance estimates under the signal-independent noise model (Diedrichsen et al. 2021). It equals
  the Frobenius cosine of the double-centred matrices −½·H D H, which is how it is computed here.
Pairs that are NaN in any RDM are left out, so RDMs with missing entries compare on the shared pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import kendalltau, rankdata

from .errors import NeuroError
from .rdms import RDMs, condition_difference, n_conditions_from_pairs


@dataclass(frozen=True)
class Comparator:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray]   # (k1 × pairs, k2 × pairs) -> k1 × k2
    rank_based: bool
    citation: str


COMPARATORS: dict[str, Comparator] = {}
ALIASES = {"corr": "pearson", "tau-a": "kendall-tau-a", "kendall": "kendall-tau-b", "tau-b": "kendall-tau-b",
           "cosine_cov": "whitened-cosine", "corr_cov": "whitened-pearson"}


def register_comparator(name: str, *, rank_based: bool = False, citation: str = "") -> Callable:
    def wrap(fn: Callable) -> Callable:
        COMPARATORS[name] = Comparator(name, fn, rank_based, citation)
        return fn
    return wrap


def resolve_method(method: str) -> Comparator:
    key = ALIASES.get(method, method)
    if key not in COMPARATORS:
        raise NeuroError(f"unknown comparison method {method!r}; choose one of {sorted(COMPARATORS)}")
    return COMPARATORS[key]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return x / norms


def _cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _unit_rows(a) @ _unit_rows(b).T


def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True)


@register_comparator("cosine")
def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cosine_matrix(a, b)


@register_comparator("pearson")
def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cosine_matrix(_centre(a), _centre(b))


@register_comparator("spearman", rank_based=True)
def _spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _pearson(rankdata(a, axis=1), rankdata(b, axis=1))


@register_comparator("rho-a", rank_based=True, citation="Schütt et al. 2023")
def _rho_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = a.shape[1]
    return 12.0 * (_centre(rankdata(a, axis=1)) @ _centre(rankdata(b, axis=1)).T) / (n ** 3 - n)


def _tie_pairs(x: np.ndarray) -> int:
    _, counts = np.unique(x, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _tau_a_pair(x: np.ndarray, y: np.ndarray) -> float:
    """(concordant − discordant) / all pairs, via scipy's O(n log n) tau-b and the tie counts."""
    n = len(x)
    total = n * (n - 1) // 2
    x_ties, y_ties = _tie_pairs(x), _tie_pairs(y)
    if x_ties == total or y_ties == total:
        return 0.0
    tau_b = kendalltau(x, y, variant="b").statistic
    return float(np.clip(tau_b * np.sqrt((total - x_ties) * (total - y_ties)) / total, -1.0, 1.0))


@register_comparator("kendall-tau-a", rank_based=True, citation="Nili et al. 2014")
def _tau_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[_tau_a_pair(x, y) for y in b] for x in a])


@register_comparator("kendall-tau-b", rank_based=True)
def _tau_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[kendalltau(x, y, variant="b").statistic for y in b] for x in a])


def double_centred(vectors: np.ndarray) -> np.ndarray:
    """Flattened H·D·H (n² entries per RDM) for complete upper-triangle vectors: the whitening basis."""
    n = n_conditions_from_pairs(vectors.shape[1])
    iu = np.triu_indices(n, 1)
    mats = np.zeros((vectors.shape[0], n, n))
    mats[:, iu[0], iu[1]] = vectors
    mats[:, iu[1], iu[0]] = vectors
    row = mats.mean(axis=2, keepdims=True)
    mats = mats - row - row.transpose(0, 2, 1) + row.mean(axis=1, keepdims=True)
    return mats.reshape(vectors.shape[0], -1)


@register_comparator("whitened-cosine", citation="Diedrichsen et al. 2021")
def _whitened_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cosine_matrix(double_centred(a), double_centred(b))


@register_comparator("whitened-pearson", citation="Diedrichsen et al. 2021")
def _whitened_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _cosine_matrix(double_centred(_centre(a)), double_centred(_centre(b)))


def _as_vectors(x: RDMs | np.ndarray) -> np.ndarray:
    if isinstance(x, RDMs):
        return x.vectors
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[None]
    if x.ndim == 2 and x.shape[0] == x.shape[1] and x.shape[0] > 1 and np.allclose(np.diag(x), 0, equal_nan=True):
        return RDMs.from_matrices(x).vectors
    if x.ndim == 3:
        return RDMs.from_matrices(x).vectors
    return x


def compare(a: RDMs | np.ndarray, b: RDMs | np.ndarray, method: str = "spearman") -> np.ndarray:
    """Similarity of every RDM in ``a`` with every RDM in ``b`` (``a.n_rdm × b.n_rdm``)."""
    comparator = resolve_method(method)
    va, vb = _as_vectors(a), _as_vectors(b)
    if va.shape[1] != vb.shape[1]:
        raise NeuroError(f"RDMs over different numbers of conditions ({n_conditions_from_pairs(va.shape[1])} vs "
                         f"{n_conditions_from_pairs(vb.shape[1])}); subset them to the same conditions")
    if isinstance(a, RDMs) and isinstance(b, RDMs) and list(a.conditions) != list(b.conditions):
        if sorted(a.conditions) != sorted(b.conditions):
            difference = condition_difference(a.conditions, b.conditions)
            raise NeuroError(f"the two RDMs are over different conditions ({difference}); "
                             "subset_conditions() to a common set")
        vb = b.subset_conditions(a.conditions).vectors
    ok = np.isfinite(va).all(axis=0) & np.isfinite(vb).all(axis=0)
    if not ok.all():
        if comparator.name.startswith("whitened"):
            raise NeuroError("whitened comparisons need complete RDMs; fill or drop the conditions with NaN entries")
        va, vb = va[:, ok], vb[:, ok]
    if va.shape[1] < 2:
        raise NeuroError("fewer than 2 dissimilarities are left to compare")
    return comparator.fn(va, vb)


def undefined_reason(model: np.ndarray, brain: np.ndarray, names: tuple[str, str] = ("model", "brain")) -> str:
    """In plain words, why the comparison of the RDM vector ``model`` with the RDM vectors ``brain``
    (subjects × pairs, or one vector) is undefined (NaN): the flag that goes beside an n/a similarity."""
    brain = np.atleast_2d(brain)
    ok = np.isfinite(model) & np.isfinite(brain).all(0)
    if ok.sum() < 2:
        return f"fewer than 2 dissimilarities are finite in both the {names[0]} and the {names[1]} RDM"
    if np.ptp(model[ok]) == 0:
        return f"the {names[0]} RDM is constant (identical stimuli, or a layer that does not tell them apart)"
    flat = [s for s in range(len(brain)) if np.ptp(brain[s, ok]) == 0]
    if flat:
        return (f"the {names[1]} RDM is constant" if len(brain) == 1 else
                f"{len(flat)} of {len(brain)} subjects' {names[1]} RDMs are constant")
    return f"the comparison is undefined for these {names[0]} and {names[1]} RDMs"
