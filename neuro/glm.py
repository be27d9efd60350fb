"""Condition patterns from BOLD time series: one ordinary-least-squares GLM per run.

Design per run: one regressor per condition (its boxcar, built from the volume labels on a grid
``oversampling`` times finer than the TR, convolved with the canonical double-gamma haemodynamic
response and read at the middle of each volume, as SPM's default reference slice) plus Legendre
polynomial drift terms up to ``drift_order`` (the constant included). The per-run betas are the
patterns for cross-validated RDMs; the residuals, with their degrees of freedom, feed the noise
estimate (``neuro.noise_from_residuals``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import gamma

from .errors import NeuroError
from .patterns import Patterns


def spm_hrf(tr: float, oversampling: int = 16, length: float = 32.0) -> np.ndarray:
    """SPM's canonical double-gamma response sampled every ``tr / oversampling`` seconds from 0 to
    ``length`` s, normalised to unit sum (so a sustained boxcar of height 1 plateaus at 1).

    Response gamma with shape 6 (SPM's "peak delay 6 s"; its maximum is at 5 s), undershoot gamma with
    shape 16 ("undershoot delay 16 s"), both of unit scale, undershoot-to-response ratio 1/6."""
    if not tr > 0:
        raise NeuroError(f"tr must be positive (seconds per volume), got {tr}")
    if int(oversampling) != oversampling or oversampling < 1:
        raise NeuroError(f"oversampling must be a positive integer, got {oversampling}")
    if not length > 0:
        raise NeuroError(f"length must be positive (seconds), got {length}")
    dt = tr / int(oversampling)
    t = np.arange(0.0, length + dt / 2, dt)
    h = gamma.pdf(t, 6.0) - gamma.pdf(t, 16.0) / 6.0
    return h / h.sum()


def condition_regressor(on: np.ndarray, hrf: np.ndarray, oversampling: int) -> np.ndarray:
    """The response to a boxcar (``on``: one bool per volume, the stimulus on during that whole volume),
    read at the middle of each volume."""
    n = len(on)
    fine = np.repeat(np.asarray(on, dtype=np.float64), oversampling)
    response = np.convolve(fine, hrf)[: n * oversampling]
    return response[oversampling // 2::oversampling][:n]


def drift_regressors(n: int, order: int) -> np.ndarray:
    """Legendre polynomials 1, P1, …, P_order over the run (orthogonal, well conditioned for high orders)."""
    if int(order) != order or order < 0:
        raise NeuroError(f"drift_order must be a non-negative integer, got {order}")
    return np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), int(order))


def design_matrix(labels: Sequence[str], conditions: Sequence[str], tr: float, drift_order: int = 1,
                  oversampling: int = 16) -> np.ndarray:
    """One run's design: the conditions' HRF-convolved boxcars (in ``conditions`` order), then the drift."""
    labels = np.asarray([str(x) for x in labels])
    hrf = spm_hrf(tr, oversampling)
    cols = [condition_regressor(labels == str(c), hrf, oversampling) for c in conditions]
    return np.column_stack(cols + [drift_regressors(len(labels), drift_order)])


def _check_inputs(bold: np.ndarray, labels: np.ndarray, runs: np.ndarray) -> None:
    if bold.ndim != 2:
        raise NeuroError(f"bold must be time × voxels, got shape {bold.shape}; use neuro.load_bold per ROI")
    if not len(bold) == len(labels) == len(runs):
        raise NeuroError(f"bold has {len(bold)} volumes but there are {len(labels)} labels and {len(runs)} runs; "
                         "give one label and one run per volume")
    if not np.isfinite(bold).all():
        raise NeuroError("the BOLD data hold NaN/inf; drop those voxels first (load_bold(..., nan='drop'))")


def _conditions(labels: np.ndarray, baseline: Sequence[str]) -> list[str]:
    """Non-baseline labels in order of first appearance."""
    ignored = {str(b) for b in baseline}
    conditions = [c for c in dict.fromkeys(labels.tolist()) if c not in ignored]
    if not conditions:
        raise NeuroError(f"no conditions left after removing the baseline labels {sorted(ignored)}")
    return conditions


def _fit_run(y: np.ndarray, x: np.ndarray, run: object) -> tuple[np.ndarray, np.ndarray, int]:
    """OLS betas, residuals and residual degrees of freedom of one run."""
    beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    if rank < x.shape[1]:
        raise NeuroError(f"the design of run {run} is rank deficient (rank {rank} < {x.shape[1]} regressors): "
                         "a condition fills the whole run or is collinear with the drift; lower drift_order "
                         "or check the labels")
    return beta, y - x @ beta, int(len(y) - rank)


def condition_patterns(bold: np.ndarray, labels: Sequence, runs: Sequence, tr: float,
                       baseline: str | Sequence[str] = ("rest",), drift_order: int = 1, oversampling: int = 16
                       ) -> tuple[Patterns, list[np.ndarray], list[int]]:
    """Per-run condition betas with the runs' residuals and their degrees of freedom.

    ``bold``: time × voxels; ``labels``: the condition shown at each volume (``baseline`` labels get no
    regressor: they are the implicit baseline); ``runs``: the run of each volume. Returns
    ``(patterns, residuals, dof)``: one pattern row per (run, condition), runs and conditions in order
    of first appearance, ``patterns.runs`` set; ``residuals[i]`` is run i's time × voxel residual and
    ``dof[i] = T_run - rank(X)``. Every condition must appear in every run.
    """
    bold = np.asarray(bold, dtype=np.float64)
    labels = np.asarray([str(x) for x in labels])
    runs = np.asarray(runs)
    _check_inputs(bold, labels, runs)
    conditions = _conditions(labels, (baseline,) if isinstance(baseline, str) else baseline)
    betas, residuals, dofs, run_of_row = [], [], [], []
    for run in dict.fromkeys(runs.tolist()):
        sel = runs == run
        missing = [c for c in conditions if c not in set(labels[sel])]
        if missing:
            raise NeuroError(f"run {run} has no volumes of {[str(c) for c in missing[:5]]}; drop that run or that "
                             "condition (cross-validated RDMs need every condition in every run)")
        x = design_matrix(labels[sel], conditions, tr, drift_order, oversampling)
        beta, residual, dof = _fit_run(bold[sel], x, run)
        betas.append(beta[: len(conditions)])
        residuals.append(residual)
        dofs.append(dof)
        run_of_row.extend([run] * len(conditions))
    patterns = Patterns(np.concatenate(betas), np.asarray(conditions * len(betas)), np.asarray(run_of_row),
                        {"estimated_by": "per-run OLS GLM, canonical double-gamma HRF", "tr": float(tr),
                         "drift_order": int(drift_order), "baseline": [str(b) for b in np.atleast_1d(baseline)]})
    return patterns, residuals, dofs
