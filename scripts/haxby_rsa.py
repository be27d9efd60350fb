"""The NIfTI path end to end on real fMRI: Haxby et al. (2001), subject 1, one slice (shipped with neuro).

Load the BOLD series in the ventral-temporal mask → per-run condition betas from a GLM → noise
covariance from the GLM residuals (shrinkage) → crossnobis RDM across the 12 runs → comparison with
categorical model RDMs (Kendall tau-a, as Nili et al. 2014 recommend for models with ties), each with a
condition-permutation p-value. Writes RDMs, a table and a figure into ``--out``.

    python scripts/haxby_rsa.py [--out runs/haxby2001_sub1] [--noise shrinkage_diag]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import neuro
from neuro.datasets import load_haxby2001_sub1
from neuro.glm import condition_patterns

# categorical models over the 8 categories (1 = different groups, 0 = same group)
GROUPS = {
    "animate vs inanimate": {"face": 0, "cat": 0},
    "faces vs rest": {"face": 0},
    "places vs objects": {"house": 0},
    "scrambled vs intact": {"scrambledpix": 0},
}


def category_model(conditions: np.ndarray, members: dict[str, int]) -> np.ndarray:
    group = np.array([members.get(c, 1) for c in conditions])
    m = (group[:, None] != group[None, :]).astype(float)
    return m[np.triu_indices(len(conditions), 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/haxby2001_sub1")
    ap.add_argument("--noise", default="shrinkage_diag", choices=["none", "diag", "shrinkage_diag", "shrinkage_eye"])
    ap.add_argument("--permutations", type=int, default=10000)
    args = ap.parse_args()
    out = Path(args.out)

    data = load_haxby2001_sub1()
    bold = neuro.load_bold(data.bold_path, data.mask_path)["mask"]
    patterns, residuals, dof = condition_patterns(bold, data.labels, data.runs, data.tr)
    noise = None if args.noise == "none" else neuro.noise_from_residuals(residuals, args.noise, dof=sum(dof))
    brain = neuro.compute_rdm(patterns, "crossnobis", noise=noise, name="VT crossnobis")
    brain.descriptors["citation"] = data.citation
    brain.save(out / "brain_rdm.npz")

    models = neuro.RDMs(np.stack([category_model(brain.conditions, g) for g in GROUPS.values()]),
                        brain.conditions, "categorical", list(GROUPS))
    test = neuro.permutation_test(models, brain, "kendall-tau-a", n=args.permutations)
    q = neuro.fdr(test.p)
    lines = ["model,tau_a,p,p_fdr"]
    print(f"Haxby 2001 subject 1, {bold.shape[1]} VT voxels, {len(np.unique(patterns.runs))} runs, "
          f"crossnobis ({args.noise} noise), {args.permutations} permutations")
    for name, tau, p, qv in zip(models.names, test.observed, test.p, q):
        print(f"  {name:24s} tau-a {tau:+.3f}  p {p:.4f}  FDR {qv:.4f}")
        lines.append(f"{name},{tau:.6f},{p:.6g},{qv:.6g}")
    (out / "comparisons.csv").write_text("\n".join(lines) + "\n")
    neuro.plots.plot_rdms([brain], out / "brain_rdm.png", percentile=False)
    print(f"RDM, table and figure in {out}/")


if __name__ == "__main__":
    main()
