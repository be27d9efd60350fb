"""Do variants of the same stimuli (clean, white-box adversarial, black-box adversarial, ...) change a
representation, and differently from each other? (The network side of Han et al. 2019, seed 001.)

Input: activations per variant and layer, the rows of every variant being the same stimuli in the same
order. Per layer, two complementary tests:

1. Geometry (RDM level): the RDM of each variant is compared with the reference variant's RDM
   (similarity ``s_v``); the difference between two variants, s_a − s_b, gets a percentile CI and a
   two-sided bootstrap p-value from resampling the stimuli (both similarities on the same draws).
2. Displacement (stimulus level): each stimulus' pattern moves away from its reference pattern by
   ``1 − r`` (correlation distance); the two variants' displacements are compared with a paired
   Wilcoxon signed-rank test across stimuli, with the median difference as effect size.
p-values are FDR-adjusted across layers (and across the two tests separately).
"""

from __future__ import annotations

import warnings
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import wilcoxon

from .compare import compare, undefined_reason
from .errors import NeuroError
from .inference import bootstrap, fdr
from .rdm_methods import compute_rdm
from .rdms import RDMs


def _row_correlation_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - (a * b).sum(1) / denom


NAN = float("nan")


def _mean(values: np.ndarray) -> float:
    """The mean of the finite values; NaN, without a warning, when there are none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else NAN


def _bootstrap_difference(d: np.ndarray, observed: float) -> dict[str, float]:
    """Percentile CI and two-sided bootstrap p of a difference of similarities; NaN where it is undefined."""
    d = d[np.isfinite(d)]
    if not np.isfinite(observed) or d.size == 0:
        return {"ci_low": NAN, "ci_high": NAN, "p_bootstrap": NAN}
    lo, hi = np.percentile(d, [2.5, 97.5])
    p = min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean()) + 1 / (len(d) + 1))
    return {"ci_low": float(lo), "ci_high": float(hi), "p_bootstrap": float(p)}


def _displacement_test(da: np.ndarray, db: np.ndarray) -> dict[str, float | int]:
    """Paired Wilcoxon test of two variants' displacements over the stimuli where both are defined:
    p = 1 when they never differ, NaN when no stimulus has both."""
    diff = da - db
    ok = np.isfinite(diff)
    test = None
    if np.any(diff[ok] != 0):
        with warnings.catch_warnings():                  # scipy's small-sample notes: the p-value says enough
            warnings.simplefilter("ignore")
            test = wilcoxon(da[ok], db[ok])
    return {"displacement_a": _mean(da), "displacement_b": _mean(db),
            "displacement_median_difference": float(np.median(diff[ok])) if ok.any() else NAN,
            "wilcoxon_statistic": float(test.statistic) if test else NAN,
            "p_wilcoxon": float(test.pvalue) if test else (1.0 if ok.any() else NAN), "n_stimuli": int(ok.sum())}


def variant_rdms(acts: Mapping[str, Mapping[str, np.ndarray]], conditions: Sequence[str],
                 method: str = "correlation") -> dict[str, dict[str, RDMs]]:
    """{variant: {layer: RDMs}} from {variant: {layer: stimuli × features}}."""
    out: dict[str, dict[str, RDMs]] = {}
    for variant, layers in acts.items():
        out[variant] = {}
        for layer, a in layers.items():
            a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
            if len(a) != len(conditions):
                raise NeuroError(f"variant {variant!r} layer {layer!r} has {len(a)} rows for {len(conditions)} stimuli")
            rdm = compute_rdm(a, method, conditions=conditions, name=f"{layer}/{variant}")
            rdm.descriptors.update(variant=variant, layer=layer)
            out[variant][layer] = rdm
    return out


def variant_analysis(acts: Mapping[str, Mapping[str, np.ndarray]], conditions: Sequence[str],
                     reference: str = "clean", rdm_method: str = "correlation", comparator: str = "spearman",
                     n_bootstrap: int = 1000, seed: int = 0, pairs: Sequence[tuple[str, str]] | None = None
                     ) -> dict[str, list[dict]]:
    """Per layer: similarity of each variant's RDM to the reference RDM, and tests between variant pairs.

    Returns ``{"similarity": rows, "differences": rows}``; see the module docstring for the statistics.
    """
    if reference not in acts:
        raise NeuroError(f"reference variant {reference!r} is missing; variants given: {sorted(acts)}")
    others = [v for v in acts if v != reference]
    if not others:
        raise NeuroError("at least one variant besides the reference is needed")
    layer_sets = [list(acts[v]) for v in acts]
    if any(ls != layer_sets[0] for ls in layer_sets):
        raise NeuroError("every variant needs the same layers")
    rdms = variant_rdms(acts, conditions, rdm_method)
    pairs = list(pairs) if pairs is not None else list(combinations(others, 2))
    sim_rows, diff_rows = [], []
    for layer in layer_sets[0]:
        ref_rdm = rdms[reference][layer]
        cand = RDMs.concat([rdms[v][layer] for v in others])
        observed = compare(cand, ref_rdm, comparator)[:, 0]
        boot = bootstrap(cand, ref_rdm, comparator, n=n_bootstrap, seed=seed, ceiling=False) if n_bootstrap else None
        ci = boot.ci() if boot is not None else np.full((len(others), 2), np.nan)
        ref_act = np.asarray(acts[reference][layer], dtype=np.float64).reshape(len(conditions), -1)
        displacement = {v: _row_correlation_distance(
            np.asarray(acts[v][layer], dtype=np.float64).reshape(len(conditions), -1), ref_act) for v in others}
        for k, v in enumerate(others):
            defined = bool(np.isfinite(observed[k]))
            sim_rows.append({"layer": layer, "variant": v, "reference": reference, "similarity": float(observed[k]),
                             "ci_low": float(ci[k, 0]) if defined else NAN,
                             "ci_high": float(ci[k, 1]) if defined else NAN,
                             "mean_displacement": _mean(displacement[v]),
                             "undefined": None if defined else undefined_reason(
                                 cand.vectors[k], ref_rdm.vectors, (f"{v} variant's", f"{reference} variant's"))})
        for a, b in pairs:
            ia, ib = others.index(a), others.index(b)
            row = {"layer": layer, "a": a, "b": b, "similarity_a": float(observed[ia]),
                   "similarity_b": float(observed[ib]), "difference": float(observed[ia] - observed[ib])}
            if boot is not None:
                row.update(_bootstrap_difference(boot.samples[:, ia] - boot.samples[:, ib], row["difference"]))
            row.update(_displacement_test(displacement[a], displacement[b]))
            reasons = {r["undefined"]: 1 for r in sim_rows[-len(others):] if r["variant"] in (a, b) and r["undefined"]}
            row["undefined"] = "; ".join(reasons) or None
            diff_rows.append(row)
    for key in ("p_bootstrap", "p_wilcoxon"):
        if diff_rows and key in diff_rows[0]:
            q = fdr(np.array([r[key] for r in diff_rows]))
            for r, qv in zip(diff_rows, q):
                r[key + "_fdr"] = float(qv)
    return {"similarity": sim_rows, "differences": diff_rows, "rdms": rdms}
