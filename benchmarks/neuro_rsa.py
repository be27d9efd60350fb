"""neuro vs rsatoolbox in the same run, on the same synthetic data (Gaussian, seed 0).

Cases (those of the issue):
  (a) correlation RDM, 1000 conditions × 10000 channels;
  (b) crossnobis, 8 runs × 100 conditions × 2000 channels, identity noise, and (b') with a
      shrinkage_diag noise covariance estimated from the residuals (estimate + RDM timed together);
  (c) a 1000-sample condition bootstrap of a model–data comparison over 100 conditions and 5 subject
      RDMs, with the noise ceiling per sample (rsatoolbox ``eval_bootstrap_pattern``), Pearson and Spearman.
Every case checks that both tools give the same numbers (the bootstrap replays rsatoolbox's own draws).
Peak memory of the numpy allocations (tracemalloc) is printed for (b).

    python benchmarks/neuro_rsa.py [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc
from importlib.metadata import version
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import rsatoolbox  # noqa: E402
from rsatoolbox.data import Dataset  # noqa: E402
from rsatoolbox.data.noise import prec_from_residuals  # noqa: E402
from rsatoolbox.inference import eval_bootstrap_pattern  # noqa: E402
from rsatoolbox.model import ModelFixed  # noqa: E402
from rsatoolbox.rdm import calc_rdm  # noqa: E402

from neuro import Patterns, RDMs, bootstrap, compute_rdm, noise_from_residuals  # noqa: E402


def best_time(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def peak_mb(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2 ** 20


def row(case: str, theirs: float, ours: float, diff: float, extra: str = "") -> None:
    print(f"| {case} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.1f} | {diff:.1e} |{extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the recorded figures)")
    args = ap.parse_args()
    scale = 4 if args.quick else 1
    rng = np.random.default_rng(0)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
          f"rsatoolbox {version('rsatoolbox')}")
    print("| case | rsatoolbox s | neuro s | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|")

    # (a) correlation RDM
    x = rng.standard_normal((1000 // scale, 10000 // scale))
    t_ref, ref = best_time(lambda: calc_rdm(Dataset(x), method="correlation"), args.repeat)
    t_ours, ours = best_time(lambda: compute_rdm(x, "correlation"), args.repeat)
    row(f"(a) correlation RDM {x.shape[0]}×{x.shape[1]}", t_ref, t_ours,
        np.abs(ref.get_vectors() - ours.vectors).max())

    # (b) crossnobis
    n_run, n_cond, n_vox = 8, 100 // scale, 2000 // scale
    signal = rng.standard_normal((n_cond, n_vox))
    y = np.concatenate([signal + rng.standard_normal((n_cond, n_vox)) for _ in range(n_run)])
    cond = np.tile(np.arange(n_cond), n_run)
    run = np.repeat(np.arange(n_run), n_cond)
    ds = Dataset(y, obs_descriptors={"cond": cond, "run": run})
    names = np.array([f"{c:04d}" for c in cond])
    patterns = Patterns(y, names, run)
    theirs_b = lambda: calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="run")  # noqa: E731
    ours_b = lambda: compute_rdm(patterns, "crossnobis")  # noqa: E731
    t_ref, ref = best_time(theirs_b, args.repeat)
    t_ours, ours = best_time(ours_b, args.repeat)
    row(f"(b) crossnobis {n_run} runs × {n_cond} cond × {n_vox} ch", t_ref, t_ours,
        np.abs(ref.get_vectors() - ours.vectors).max(),
        f" peak memory: rsatoolbox {peak_mb(theirs_b):.0f} MB, neuro {peak_mb(ours_b):.0f} MB")

    means = y.reshape(n_run, n_cond, n_vox).mean(0)
    residuals = y - np.tile(means, (n_run, 1))
    dof = n_run * n_cond - n_cond

    def theirs_noise():
        prec = prec_from_residuals(residuals, dof=dof, method="shrinkage_diag")
        return calc_rdm(ds, method="crossnobis", descriptor="cond", cv_descriptor="run", noise=prec)

    def ours_noise():
        return compute_rdm(patterns, "crossnobis", noise=noise_from_residuals(residuals, "shrinkage_diag", dof=dof))

    t_ref, ref = best_time(theirs_noise, 1)
    t_ours, ours = best_time(ours_noise, args.repeat)
    row("(b') shrinkage_diag noise + crossnobis", t_ref, t_ours, np.abs(ref.get_vectors() - ours.vectors).max())

    # (c) bootstrap
    n_cond, n_subj, n_boot = 100 // scale, 5, 1000 // scale
    true = rng.standard_normal((n_cond, 200))
    data = rsatoolbox.rdm.concat([calc_rdm(Dataset(true + 1.5 * rng.standard_normal(true.shape)),
                                           method="correlation") for _ in range(n_subj)])
    model = calc_rdm(Dataset(true), method="correlation")
    cnames = [f"{i:03d}" for i in range(n_cond)]
    brain = RDMs(data.get_vectors(), cnames, "correlation")
    model_ours = RDMs(model.get_vectors(), cnames, "correlation")
    for ours_m, theirs_m in [("pearson", "corr"), ("spearman", "spearman")]:
        np.random.seed(1)
        t_ref, ref = best_time(lambda: eval_bootstrap_pattern(ModelFixed("m", model), data, method=theirs_m,
                                                              N=n_boot), 1)
        np.random.seed(1)
        idx = np.stack([np.random.randint(0, n_cond, size=n_cond) for _ in range(n_boot)])
        t_ours, ours = best_time(lambda: bootstrap(model_ours, brain, ours_m, condition_indices=idx), args.repeat)
        diff = max(np.nanmax(np.abs(ref.evaluations[:, 0] - ours.samples[:, 0])),
                   np.nanmax(np.abs(ref.noise_ceiling.T - ours.ceiling)))
        row(f"(c) bootstrap N={n_boot}, {n_cond} cond, {n_subj} subj, {ours_m}, noise ceiling per sample",
            t_ref, t_ours, diff)


if __name__ == "__main__":
    main()
