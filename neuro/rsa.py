"""One call for the whole comparison: model RDMs (e.g. layers) × brain RDMs (ROIs, with subjects).

    result = neuro.rsa(layer_rdms, {"hIT": hit_subject_rdms}, method="spearman", n_bootstrap=1000)
    result.rows          # one dict per layer × ROI: similarity, CI, p, FDR q, noise ceiling, ...
    result.save("rsa.json"); result.save_csv("rsa.csv")
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .compare import compare, resolve_method, undefined_reason
from .errors import NeuroError
from .files import atomic_write_text
from .inference import bootstrap, fdr, noise_ceiling, permutation_test, subject_tests
from .rdms import RDMs, condition_difference

COLUMNS = ["model", "roi", "similarity", "ci_low", "ci_high", "p", "p_fdr", "sem", "p_subjects",
           "noise_lower", "noise_upper", "pct_of_lower_ceiling", "n_subjects", "n_conditions", "undefined"]


@dataclass
class RSAResult:
    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    descriptors: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"settings": self.settings, "descriptors": self.descriptors, "rows": self.rows}

    def save(self, path: str | Path) -> Path:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, default=_plain) + "\n")
        return Path(path)

    def save_csv(self, path: str | Path) -> Path:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
        atomic_write_text(path, buf.getvalue())
        return Path(path)

    def row(self, model: str, roi: str) -> dict[str, Any]:
        for r in self.rows:
            if r["model"] == model and r["roi"] == roi:
                return r
        raise KeyError((model, roi))


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _fmt(x: Any) -> Any:
    if isinstance(x, float):
        return "" if np.isnan(x) else f"{x:.6g}"
    return x


def _f(x: Any) -> float:
    return float(x) if x is not None and np.isfinite(x) else float("nan")


def rsa(models: RDMs, brain: RDMs | Mapping[str, RDMs], method: str = "spearman", *, n_bootstrap: int = 1000,
        over: str = "conditions", n_permutations: int = 1000, seed: int = 0, level: float = 0.95,
        progress: Callable[[str, int, int], None] | None = None) -> RSAResult:
    """Compare every model RDM with every ROI's subject RDMs.

    - similarity: the comparison averaged over subjects (one brain RDM: just the comparison);
    - CI: percentile bootstrap over ``over`` ("conditions", "subjects", "both");
    - p: condition-label permutation test (one-sided), FDR-adjusted over all model × ROI cells;
    - noise ceiling (lower, upper) when an ROI has ≥ 2 subject RDMs; p_subjects: one-sample t-test across
      subjects (≥ 3 subjects);
    - undefined: None, or why the similarity is undefined (a constant RDM, ...); such a row's similarity,
      CI, p and FDR q are NaN, and it does not count among the FDR's tests.
    """
    resolve_method(method)
    if isinstance(models, (list, tuple)) and models and all(isinstance(m, RDMs) for m in models):
        models = RDMs.concat(list(models))
    if not isinstance(models, RDMs):
        raise NeuroError(f"models must be an RDMs object (or a list of them), not {type(models).__name__}; "
                         "neuro.compute_rdm or neuro.RDMs(vectors, conditions) makes one")
    if not isinstance(brain, (RDMs, Mapping)):
        raise NeuroError(f"brain must be an RDMs object or a {{roi: RDMs}} mapping, not {type(brain).__name__}")
    rois = {"brain": brain} if isinstance(brain, RDMs) else dict(brain)
    if not rois:
        raise NeuroError("no brain RDMs given")
    for roi, subjects in rois.items():
        if not isinstance(subjects, RDMs):
            raise NeuroError(f"ROI {roi!r}: expected an RDMs object of its subjects, not {type(subjects).__name__}")
    for name, value in (("n_bootstrap", n_bootstrap), ("n_permutations", n_permutations)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise NeuroError(f"{name} must be a whole number, 0 or more (0 skips it), got {value!r}")
    if not 0 < level < 1:
        hint = f" (a fraction: {level / 100:g} for {level:g}%)" if 1 < level < 100 else ""
        raise NeuroError(f"level must lie between 0 and 1{hint}, got {level!r}")
    if over not in ("conditions", "subjects", "both"):
        raise NeuroError(f"over must be 'conditions', 'subjects' or 'both', not {over!r}")
    rows: list[dict[str, Any]] = []
    for roi, subjects in rois.items():
        if sorted(subjects.conditions) != sorted(models.conditions):
            raise NeuroError(f"ROI {roi!r} and the model RDMs are over different conditions "
                             f"({condition_difference(subjects.conditions, models.conditions)}); present the same "
                             "stimuli to both")
        m = models.subset_conditions(subjects.conditions) if list(models.conditions) != list(subjects.conditions) \
            else models
        sims = compare(m, subjects, method)                            # (k, s)
        ceiling = noise_ceiling(subjects, method) if subjects.n_rdm >= 2 else (np.nan, np.nan)
        boot_over = over if subjects.n_rdm >= 2 or over == "conditions" else "conditions"
        cb = (lambda d, t, roi=roi: progress(f"bootstrap {roi}", d, t)) if progress else None
        boot = bootstrap(m, subjects, method, n=n_bootstrap, over=boot_over, seed=seed, ceiling=False,
                         progress=cb) if n_bootstrap else None
        cp = (lambda d, t, roi=roi: progress(f"permutations {roi}", d, t)) if progress else None
        perm = permutation_test(m, subjects, method, n=n_permutations, seed=seed, progress=cp) \
            if n_permutations else None
        subj = subject_tests(m, subjects, method) if subjects.n_rdm >= 3 else {}
        ci = boot.ci(level) if boot is not None else np.full((m.n_rdm, 2), np.nan)
        for k, name in enumerate(m.names):
            sim = float(sims[k].mean())
            defined = bool(np.isfinite(sim))
            rows.append({
                "model": str(name), "roi": roi, "similarity": sim,
                # an undefined statistic has no interval and no p-value (the permutation test says NaN too)
                "ci_low": _f(ci[k, 0]) if defined else float("nan"), "ci_high": _f(ci[k, 1]) if defined
                else float("nan"),
                "p": _f(perm.p[k]) if perm is not None else float("nan"),
                "sem": _f(subj["sem"][k]) if subj else float("nan"),
                "p_subjects": _f(subj["t_p"][k]) if "t_p" in subj else float("nan"),
                "noise_lower": _f(ceiling[0]), "noise_upper": _f(ceiling[1]),
                "pct_of_lower_ceiling": _f(100 * sim / ceiling[0]) if np.isfinite(ceiling[0]) and ceiling[0] > 0
                else float("nan"),
                "per_subject": [float(v) for v in sims[k]],
                "n_subjects": int(subjects.n_rdm), "n_conditions": int(subjects.n_cond),
                # one subject cannot be resampled: its CI comes from the conditions whatever ``over`` says
                "bootstrap_over": boot_over if n_bootstrap else None,
                "undefined": None if defined else undefined_reason(m.vectors[k], subjects.vectors),
            })
    q = fdr(np.array([r["p"] for r in rows]))
    for r, qv in zip(rows, q):
        r["p_fdr"] = _f(qv)
    settings = {"method": resolve_method(method).name, "n_bootstrap": n_bootstrap, "bootstrap_over": over,
                "n_permutations": n_permutations, "seed": seed, "ci_level": level,
                "p": "one-sided condition-label permutation test, +1 corrected",
                "p_fdr": "Benjamini-Hochberg over all model x ROI cells"}
    descriptors = {"simulated": bool(models.descriptors.get("simulated")) or
                   any(bool(r.descriptors.get("simulated")) for r in rois.values())}
    return RSAResult(rows, settings, descriptors)
