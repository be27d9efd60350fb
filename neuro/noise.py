"""Noise covariance estimates for Mahalanobis and cross-validated (crossnobis) distances.

Shrinkage estimators, written vectorised (one ``X.T @ X`` instead of a loop of outer products):
- ``diag``: the per-channel variances only (univariate noise normalisation); stored as a vector.
- ``shrinkage_diag``: Schäfer & Strimmer (2005) target D: off-diagonal covariances shrunk towards 0
  by an analytic λ, variances kept.
- ``shrinkage_eye``: Ledoit & Wolf (2004): towards a multiple of the identity.
- ``full``: the sample covariance.
These follow the published estimators as rsatoolbox implements them (same degrees-of-freedom
convention, checked in the tests). A diagonal estimate stays a vector, so no dense identity or
diagonal matrix is ever built (Walther et al. 2016 recommend multivariate noise normalisation; for
tens of thousands of voxels use ``diag``: a full channel × channel matrix needs 8·V² bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import NeuroError
from .patterns import Patterns


@dataclass
class NoiseModel:
    """A channel noise covariance: a vector (diagonal) or a dense matrix, with its inverse on demand."""

    covariance: np.ndarray
    method: str
    dof: float

    @property
    def is_diagonal(self) -> bool:
        return self.covariance.ndim == 1

    def precision(self) -> np.ndarray:
        if self.is_diagonal:
            return 1.0 / self.covariance
        return np.linalg.inv(self.covariance)

    def whitener(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function mapping patterns X (rows) to X·W with W Wᵀ = Σ⁻¹, so that (XW)(YW)ᵀ = X Σ⁻¹ Yᵀ."""
        if self.is_diagonal:
            scale = 1.0 / np.sqrt(self.covariance)
            return lambda x: x * scale
        chol = np.linalg.cholesky(self.covariance)           # Σ = L Lᵀ  →  Σ⁻¹ = L⁻ᵀ L⁻¹
        from scipy.linalg import solve_triangular
        return lambda x: solve_triangular(chol, np.asarray(x).T, lower=True).T


def _variance(x: np.ndarray, dof: float) -> np.ndarray:
    return np.einsum("ij,ij->j", x, x) / dof


def _full(x: np.ndarray, dof: float) -> np.ndarray:
    return x.T @ x / dof


def _shrinkage_diag(x: np.ndarray, dof: float) -> np.ndarray:
    n = x.shape[0]
    s_sum = x.T @ x
    x2 = x * x
    s2_sum = x2.T @ x2
    s = s_sum / dof
    var = np.diag(s).copy()
    std = np.sqrt(var)
    r = s_sum / np.outer(std, std) / (n - 1)            # sample correlations
    r2 = s2_sum / np.outer(var, var) / (n - 1)
    var_r = n / dof ** 2 * (r2 - r ** 2)                # their estimated variance
    off = ~np.eye(len(var), dtype=bool)
    lam = float(np.clip(var_r[off].sum() / (r[off] ** 2).sum(), 0.0, 1.0))
    s[off] *= 1.0 - lam
    return s


def _shrinkage_eye(x: np.ndarray, dof: float) -> np.ndarray:
    n, v = x.shape
    s = x.T @ x / n
    x2 = x * x
    b2 = float(((x2.T @ x2) / n - s * s).sum() / n)
    m = float(np.trace(s) / v)
    d2 = float(((s - m * np.eye(v)) ** 2).sum())
    b2 = min(d2, b2)
    shrunk = (d2 - b2) / d2 * s
    shrunk[np.diag_indices(v)] += b2 / d2 * m
    return shrunk * n / dof


NOISE_METHODS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "diag": _variance,
    "shrinkage_diag": _shrinkage_diag,
    "shrinkage_eye": _shrinkage_eye,
    "full": _full,
}


def noise_from_residuals(residuals: np.ndarray | Sequence[np.ndarray], method: str = "shrinkage_diag",
                         dof: float | None = None) -> NoiseModel:
    """Noise covariance from residuals (time points or repetitions × channels).

    Several residual arrays (e.g. one per run of a GLM) are stacked; each is centred by column first.
    ``dof`` defaults to rows − 1 per array (pass the GLM's residual degrees of freedom when known).
    """
    if method not in NOISE_METHODS:
        raise NeuroError(f"unknown noise method {method!r}; choose one of {sorted(NOISE_METHODS)}")
    arrays = [np.asarray(residuals, dtype=np.float64)] if isinstance(residuals, np.ndarray) else \
        [np.asarray(r, dtype=np.float64) for r in residuals]
    if any(a.ndim != 2 for a in arrays) or len({a.shape[1] for a in arrays}) != 1:
        raise NeuroError("residuals must be 2-D arrays (rows × channels) with the same number of channels")
    centred = [a - a.mean(axis=0, keepdims=True) for a in arrays]
    x = np.concatenate(centred)
    if dof is None:
        dof = sum(a.shape[0] - 1 for a in arrays)
    if x.shape[0] < 2 or dof <= 0:
        raise NeuroError("at least two residual rows are needed to estimate noise")
    if not np.isfinite(x).all():
        raise NeuroError("residuals hold NaN/inf; drop those channels first")
    cov = NOISE_METHODS[method](x, float(dof))
    variances = cov if cov.ndim == 1 else np.diag(cov)
    if (variances <= 0).any():
        raise NeuroError(f"{int((variances <= 0).sum())} channels have zero noise variance (constant voxels?); "
                         "drop them before estimating noise")
    return NoiseModel(cov, method, float(dof))


def noise_from_patterns(patterns: Patterns, method: str = "shrinkage_diag") -> NoiseModel:
    """Noise covariance from repeated measurements: each observation minus its condition mean.

    The degrees of freedom are observations − conditions.
    """
    means, names = patterns.condition_means()
    index = {c: i for i, c in enumerate(names)}
    rows = np.array([index[c] for c in patterns.conditions])
    residuals = patterns.data - means[rows]
    dof = patterns.n_obs - len(names)
    if dof <= 0:
        raise NeuroError("noise needs repeated measurements: every condition appears only once")
    # residuals are already centred per condition; noise_from_residuals would centre them again by column,
    # which changes nothing only when the design is balanced, so estimate directly here
    cov = NOISE_METHODS[method](residuals, float(dof)) if method in NOISE_METHODS else None
    if cov is None:
        raise NeuroError(f"unknown noise method {method!r}; choose one of {sorted(NOISE_METHODS)}")
    return NoiseModel(cov, method, float(dof))
