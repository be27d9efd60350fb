"""Condition patterns from BOLD time series: one ordinary-least-squares GLM per run.

Design per run: one regressor per condition (its boxcar convolved with the canonical double-gamma
haemodynamic response, built on a grid 16× finer than the TR) plus polynomial drift terms. The
per-run betas are the patterns for cross-validated RDMs; the residuals, with their degrees of
freedom, feed the noise estimate (``neuro.noise_from_residuals``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import gamma

from .errors import NeuroError
from .patterns import Patterns


def spm_hrf(tr: float, oversampling: int = 16, length: float = 32.0) -> np.ndarray:
    """Canonical double-gamma response (peak at 6 s, undershoot at 16 s, ratio 1/6), sampled every
    ``tr / oversampling`` seconds, normalised to unit sum."""
    dt = tr / oversampling
    t = np.arange(0, length + dt / 2, dt)
    h = gamma.pdf(t, 6) - gamma.pdf(t, 16) / 6.0
    return h / h.sum()


def design_matrix(labels: Sequence[str], conditions: Sequence[str], tr: float, drift_order: int = 1,
                  oversampling: int = 16) -> np.ndarray:
    """Columns: the conditions' HRF-convolved boxcars, then drift polynomials 1, t, t², ... (orthogonal)."""
    labels = np.asarray(labels)
    n = len(labels)
    hrf = spm_hrf(tr, oversampling)
    cols = []
    for c in conditions:
        fine = np.repeat((labels == c).astype(np.float64), oversampling)
        cols.append(np.convolve(fine, hrf)[: n * oversampling][::oversampling])
    t = np.linspace(-1, 1, n)
    drift = np.polynomial.legendre.legvander(t, drift_order)
    return np.column_stack(cols + [drift])


def condition_patterns(bold: np.ndarray, labels: Sequence[str], runs: Sequence, tr: float,
                       baseline: Sequence[str] = ("rest",), drift_order: int = 1
                       ) -> tuple[Patterns, list[np.ndarray], list[int]]:
    """Per-run condition betas (one row per condition and run) with the runs' residuals and dof.

    ``bold``: time × voxels; ``labels``: the condition shown at each volume (``baseline`` labels get no
    regressor); ``runs``: the run of each volume. Conditions keep their order of first appearance.
    """
    bold = np.asarray(bold, dtype=np.float64)
    labels = np.asarray([str(x) for x in labels])
    runs = np.asarray(runs)
    if bold.ndim != 2 or len(bold) != len(labels) or len(labels) != len(runs):
        raise NeuroError(f"bold must be time × voxels with one label and one run per volume; got bold {bold.shape}, "
                         f"{len(labels)} labels, {len(runs)} runs")
    if not np.isfinite(bold).all():
        raise NeuroError("the BOLD data hold NaN/inf; drop those voxels first")
    _, first = np.unique(labels, return_index=True)
    conditions = [c for c in labels[np.sort(first)] if c not in set(baseline)]
    if not conditions:
        raise NeuroError("no conditions left after removing the baseline labels")
    rows, names, run_of_row, residuals, dofs = [], [], [], [], []
    for run in list(dict.fromkeys(runs.tolist())):
        sel = runs == run
        present = set(labels[sel])
        missing = [c for c in conditions if c not in present]
        if missing:
            raise NeuroError(f"run {run!r} has no volumes of {missing[:5]}; drop the run or the condition")
        x = design_matrix(labels[sel], conditions, tr, drift_order)
        y = bold[sel]
        beta, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
        residuals.append(y - x @ beta)
        dofs.append(int(len(y) - rank))
        rows.append(beta[: len(conditions)])
        names.extend(conditions)
        run_of_row.extend([run] * len(conditions))
    patterns = Patterns(np.concatenate(rows), np.asarray(names), np.asarray(run_of_row),
                        {"estimated_by": "per-run OLS GLM, canonical HRF", "tr": tr, "drift_order": drift_order})
    return patterns, residuals, dofs
