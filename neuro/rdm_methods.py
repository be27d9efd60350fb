"""Dissimilarity measures between condition patterns, in a registry.

Every method works on ``Patterns`` (observations with condition labels, optional runs) and returns an
``RDMs`` object. Observations of the same condition are averaged first, except by the
cross-validated methods, which need them separate.

Conventions (those of rsatoolbox, so that numbers agree; checked in the tests):
- ``euclidean``: *squared* Euclidean distance divided by the number of channels.
- ``correlation``: 1 − Pearson r between patterns; ``cosine``: 1 − cosine similarity.
- ``mahalanobis``: (x−y) Σ⁻¹ (x−y)ᵀ / channels with a ``NoiseModel`` (euclidean without one).
- ``crossnobis``: leave-one-run-out cross-validated Mahalanobis distance (Walther et al. 2016):
  for each run, the difference of the held-out run's patterns times Σ⁻¹ times the difference of the
  mean of the other runs, divided by channels, averaged over runs. Unbiased: zero means no information,
  and it can be negative.
All matrix work is BLAS (``X @ Y.T``); no channel × channel identity is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .errors import NeuroError
from .noise import NoiseModel
from .patterns import Patterns, group_means
from .rdms import RDMs, matrix_to_vector


@dataclass(frozen=True)
class RDMMethod:
    name: str
    fn: Callable[..., np.ndarray]      # (patterns, noise) -> condition × condition matrix, plus condition names
    cross_validated: bool
    citation: str
    uses_noise: bool | None = None     # whether ``noise`` changes it (None: not said, as for a user's method)


RDM_METHODS: dict[str, RDMMethod] = {}


def register_rdm_method(name: str, *, cross_validated: bool = False, citation: str = "",
                        uses_noise: bool | None = None) -> Callable:
    def wrap(fn: Callable) -> Callable:
        RDM_METHODS[name] = RDMMethod(name, fn, cross_validated, citation, uses_noise)
        return fn
    return wrap


def _gram_to_distances(gram: np.ndarray) -> np.ndarray:
    """d_ij = k_ii + k_jj − k_ij − k_ji for a (not necessarily symmetric) kernel matrix."""
    diag = np.diag(gram)
    return diag[:, None] + diag[None, :] - gram - gram.T


def _whiten(x: np.ndarray, noise: NoiseModel | np.ndarray | None) -> np.ndarray:
    if noise is None:
        return x
    if isinstance(noise, NoiseModel):
        return noise.whitener()(x)
    noise = np.asarray(noise, dtype=np.float64)
    if noise.ndim == 1:                                  # a diagonal precision
        return x * np.sqrt(noise)
    chol = np.linalg.cholesky(noise)                     # a dense precision P = C Cᵀ → x P yᵀ = (x C)(y C)ᵀ
    return x @ chol


def _check_noise(noise: Any, n_channels: int) -> None:
    if noise is None:
        return
    size = noise.covariance.shape[0] if isinstance(noise, NoiseModel) else np.asarray(noise).shape[0]
    if size != n_channels:
        raise NeuroError(f"the noise model has {size} channels but the patterns have {n_channels}; "
                         "estimate the noise on the same voxels")


@register_rdm_method("euclidean", uses_noise=False, citation="squared Euclidean / channels (rsatoolbox convention)")
def _euclidean(p: Patterns, noise: Any = None) -> tuple[np.ndarray, np.ndarray]:
    x, names = p.condition_means()
    x = x - x.mean(axis=0)      # distances do not move with an offset, but the Gram form loses digits to one
    sq = np.einsum("ij,ij->i", x, x)
    d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d / x.shape[1], names


@register_rdm_method("correlation", uses_noise=False, citation="Kriegeskorte, Mur & Bandettini 2008")
def _correlation(p: Patterns, noise: Any = None) -> tuple[np.ndarray, np.ndarray]:
    x, names = p.condition_means()
    z = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1)
    if (norms == 0).any():
        raise NeuroError(f"condition '{names[norms == 0][0]}' has a constant pattern; correlation distance is "
                         "undefined (use euclidean, or drop it)")
    z /= norms[:, None]
    return 1.0 - z @ z.T, names


@register_rdm_method("cosine", uses_noise=False, citation="1 − cosine similarity")
def _cosine(p: Patterns, noise: Any = None) -> tuple[np.ndarray, np.ndarray]:
    x, names = p.condition_means()
    norms = np.linalg.norm(x, axis=1)
    if (norms == 0).any():
        raise NeuroError(f"condition '{names[norms == 0][0]}' has an all-zero pattern; cosine distance is undefined")
    z = x / norms[:, None]
    return 1.0 - z @ z.T, names


@register_rdm_method("mahalanobis", uses_noise=True,
                     citation="Walther et al. 2016 (noise-normalised, not cross-validated)")
def _mahalanobis(p: Patterns, noise: Any = None) -> tuple[np.ndarray, np.ndarray]:
    x, names = p.condition_means()
    _check_noise(noise, x.shape[1])
    w = _whiten(x, noise)
    return _gram_to_distances(w @ w.T) / x.shape[1], names


def run_condition_means(p: Patterns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-run condition means: an array runs × conditions × channels, with run and condition names.

    Every condition must occur in every run (a balanced design); conditions are sorted by name, runs too.
    """
    if p.runs is None:
        raise NeuroError("cross-validated distances need runs: give one run label per observation (--runs / runs=)")
    runs = np.unique(p.runs)
    if len(runs) < 2:
        raise NeuroError("cross-validated distances need at least 2 runs; only one was given")
    names, cond_index = np.unique(p.conditions, return_inverse=True)
    run_index = np.searchsorted(runs, p.runs)
    cells = run_index * len(names) + cond_index
    counts = np.bincount(cells, minlength=len(runs) * len(names)).reshape(len(runs), len(names))
    if (counts == 0).any():
        r, c = np.argwhere(counts == 0)[0]
        missing = [str(n) for n in names[counts[r] == 0]]
        raise NeuroError(f"run {runs[r]} lacks conditions {[str(c) for c in missing[:5]]}; crossnobis needs every "
                         "condition in every run (drop the run or the condition)")
    out = group_means(p.data, cells, len(runs) * len(names))
    return out.reshape(len(runs), len(names), p.n_channels), runs, names


@register_rdm_method("crossnobis", cross_validated=True, uses_noise=True,
                     citation="Walther et al. 2016; Nili et al. 2014")
def _crossnobis(p: Patterns, noise: Any = None) -> tuple[np.ndarray, np.ndarray]:
    means, _, names = run_condition_means(p)
    n_runs = means.shape[0]
    _check_noise(noise, means.shape[2])
    w = _whiten(means.reshape(-1, means.shape[2]), noise).reshape(means.shape[0], means.shape[1], -1)
    total = w.sum(axis=0)
    # mean over folds of (total − M_r)/(R−1) · M_rᵀ  =  (S Sᵀ − Σ_r M_r M_rᵀ) / (R (R−1))
    side_by_side = w.transpose(1, 0, 2).reshape(w.shape[1], -1)        # conditions × (runs · channels)
    within = side_by_side @ side_by_side.T                              # Σ_r M_r M_rᵀ in one product
    gram = (total @ total.T - within) / (n_runs * (n_runs - 1))
    return _gram_to_distances(gram) / means.shape[2], names


def compute_rdm(patterns: Patterns | np.ndarray, method: str = "correlation", *, conditions: Sequence | None = None,
                runs: Sequence | None = None, noise: NoiseModel | np.ndarray | None = None,
                name: str = "rdm", **descriptors: Any) -> RDMs:
    """One RDM from patterns (a ``Patterns`` or an observations × channels array).

    Conditions come out in order of first appearance (sorted by name for cross-validated methods).
    ``noise``: a ``NoiseModel`` (see ``neuro.noise``), or a precision matrix / diagonal precision vector.
    """
    if method not in RDM_METHODS:
        raise NeuroError(f"unknown RDM method {method!r}; choose one of {sorted(RDM_METHODS)}")
    spec = RDM_METHODS[method]
    if noise is not None and spec.uses_noise is False:
        noisy = sorted(n for n, m in RDM_METHODS.items() if m.uses_noise)
        raise NeuroError(f"the {method!r} RDM takes no noise model; drop noise= or use "
                         f"{' or '.join(repr(n) for n in noisy)}")
    if isinstance(patterns, Patterns):
        if conditions is not None or runs is not None:
            raise NeuroError("a Patterns object carries its own conditions and runs; give conditions= and runs= only "
                             "with an array (or make the Patterns with them)")
    else:
        patterns = Patterns.from_array(patterns, conditions, runs)
    matrix, names = spec.fn(patterns, noise)
    desc = {**patterns.descriptors, **descriptors, "method": method,
            "n_channels": patterns.n_channels, "noise": None if noise is None else
            (noise.method if isinstance(noise, NoiseModel) else "precision given")}
    return RDMs(matrix_to_vector(matrix), names, method, np.asarray([name]), desc)
