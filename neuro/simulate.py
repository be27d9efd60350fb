"""Simulated fMRI-like data with a planted representational structure (tests and demos only).

Every object made here carries ``descriptors["simulated"] = True`` and a ``"SIMULATED"`` note, so
that no output built from it can be mistaken for real brain data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .patterns import Patterns
from .rdm_methods import compute_rdm
from .rdms import RDMs

NOTE = "SIMULATED data (neuro.simulate), not a measurement"


@dataclass
class SimulatedStudy:
    true_patterns: np.ndarray          # conditions × voxels: the planted structure
    subjects: list[Patterns]           # per subject: runs × conditions observations
    conditions: np.ndarray
    categories: np.ndarray             # the category of each condition

    def true_rdm(self, method: str = "correlation") -> RDMs:
        rdm = compute_rdm(Patterns(self.true_patterns, self.conditions), method, name="planted")
        rdm.descriptors.update(simulated=True, note=NOTE)
        return rdm


def simulate_study(n_conditions: int = 24, n_categories: int = 4, n_voxels: int = 200, n_subjects: int = 4,
                   n_runs: int = 6, signal: float = 1.0, noise: float = 2.0, category_strength: float = 1.5,
                   seed: int = 0) -> SimulatedStudy:
    """Condition patterns = category effect + item effect, seen through a subject-specific voxel mixing,
    plus independent Gaussian noise per run. Larger ``category_strength`` plants a stronger block structure."""
    rng = np.random.default_rng(seed)
    categories = np.arange(n_conditions) % n_categories
    latent_dim = 40
    cat_effect = rng.standard_normal((n_categories, latent_dim)) * category_strength
    item_effect = rng.standard_normal((n_conditions, latent_dim))
    latent = cat_effect[categories] + item_effect
    conditions = np.array([f"c{i:02d}_cat{c}" for i, c in enumerate(categories)])
    shared_mixing = rng.standard_normal((latent_dim, n_voxels)) / np.sqrt(latent_dim)
    true = latent @ shared_mixing * signal
    subjects = []
    for s in range(n_subjects):
        mixing = shared_mixing + 0.3 * rng.standard_normal(shared_mixing.shape) / np.sqrt(latent_dim)
        clean = latent @ mixing * signal
        rows = [clean + noise * rng.standard_normal(clean.shape) for _ in range(n_runs)]
        subjects.append(Patterns(np.concatenate(rows), np.tile(conditions, n_runs),
                                 np.repeat(np.arange(n_runs), n_conditions),
                                 {"simulated": True, "note": NOTE, "subject": f"sim{s + 1}"}))
    return SimulatedStudy(true, subjects, conditions, categories)


def subject_rdms(study: SimulatedStudy, method: str = "crossnobis") -> RDMs:
    rdms = [compute_rdm(p, method, name=p.descriptors["subject"]) for p in study.subjects]
    out = RDMs.concat(rdms)
    out.descriptors.update(simulated=True, note=NOTE)
    return out
