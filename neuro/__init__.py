"""Representational similarity analysis between network layers and brain data.

    import neuro
    patterns = neuro.load_betas(["face.nii.gz", "house.nii.gz", ...], "vt_mask.nii.gz")   # {roi: Patterns}
    brain = neuro.compute_rdm(patterns["vt_mask"], "correlation")   # conditions named by the files
    acts = neuro.activations(model, images, layers="blocks")        # {layer: array}; images in the same order
    layers = neuro.RDMs.concat([neuro.compute_rdm(a, "correlation", conditions=brain.conditions, name=l)
                                for l, a in acts.items()])
    result = neuro.rsa(layers, {"VT": brain}, method="spearman")

This package stands alone (numpy, scipy, nibabel, torch for activations): it never imports robust-kd.
"""

from .errors import NeuroError
from .patterns import Patterns
from .rdms import RDMs
from .noise import NoiseModel, noise_from_patterns, noise_from_residuals
from .rdm_methods import RDM_METHODS, compute_rdm, register_rdm_method
from .compare import COMPARATORS, compare, register_comparator
from .inference import Bootstrap, PermutationTest, bootstrap, fdr, noise_ceiling, permutation_test, subject_tests
from .rsa import RSAResult, rsa
from .simulate import simulate_study
from . import datasets, glm, io, plots, variants  # noqa: E402
from .activations import activations, list_layers, load_activations, save_activations
from .io import load_betas, load_bold, load_mask, load_rdm

__all__ = [
    "COMPARATORS", "Bootstrap", "NeuroError", "NoiseModel", "Patterns", "PermutationTest", "RDMs", "RDM_METHODS",
    "RSAResult", "bootstrap", "compare", "compute_rdm", "fdr", "noise_ceiling", "noise_from_patterns",
    "noise_from_residuals", "permutation_test", "register_comparator", "register_rdm_method", "rsa",
    "simulate_study", "subject_tests", "activations", "list_layers", "load_activations", "save_activations",
    "load_betas", "load_bold", "load_mask", "load_rdm", "datasets", "glm", "io", "plots", "variants",
]
