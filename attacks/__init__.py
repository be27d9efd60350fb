"""Adversarial attacks and robustness evaluation for any nn.Module mapping [0, 1] images to logits.

    from attacks import evaluate
    result = evaluate(model, x, y, suite="autoattack", eps=8/255, norm="Linf")
    result.robust_accuracy, result.flags, result.to_dict()

This package stands alone: it never imports the robust-kd application. What it exports here is its
public face; the modules behind it may change.
"""

from . import apgd, cw, fab, fgsm, pgd, square, transfer  # noqa: F401  (registration)
from .adaptive import BPDA, EOT
from .apgd import APGD, APGDT
from .core import Attack, CountingModel, auto_batch_size, dlr_loss, margin_loss, model_device, project
from .cw import CW
from .errors import AttackError, ModelOutputError
from .evaluate import evaluate
from .examples import adversarial_examples
from .fab import FAB, FABT
from .fgsm import FGSM
from .inflight import RunState
from .iterative import IterativeAttack
from .memory import out_of_memory
from .pgd import PGD
from .precision import PRECISIONS, check_precision, full_float32, slow_here
from .prepare import ENGINES, prepared
from .progress import Progress
from .provenance import model_fingerprint, tensors_fingerprint
from .reference import cross_check, cross_check_words, reference_suite
from .results import AttackRecord, EvaluationResult, Flag, convergence_words, eps_label
from .square import Square
from .suites import (ATTACKS, DEFAULT_EPS, SUITES, Suite, SuiteStep, build_suite, list_suites, make_attack,
                     register_attack, register_suite, setting_names, suite_from_mapping)
from .transfer import Ensemble, Transfer, transfer_matrix
from . import builtin_suites  # noqa: F401,E402  (registration; after the attacks)

__all__ = [
    # attacks
    "APGD", "APGDT", "BPDA", "CW", "EOT", "FAB", "FABT", "FGSM", "PGD", "Square", "Transfer", "Ensemble",
    "Attack", "IterativeAttack", "RunState", "ATTACKS", "register_attack", "make_attack", "setting_names",
    "dlr_loss", "margin_loss", "project", "CountingModel",
    # suites and evaluation
    "SUITES", "DEFAULT_EPS", "Suite", "SuiteStep", "build_suite", "list_suites", "register_suite", "suite_from_mapping",
    "evaluate", "Progress", "EvaluationResult", "AttackRecord", "Flag", "convergence_words", "eps_label",
    "adversarial_examples", "transfer_matrix", "prepared",
    # the reference engine (pyautoattack, torchattacks) and the comparison with it
    "ENGINES", "reference_suite", "cross_check", "cross_check_words",
    # devices, precision, provenance
    "auto_batch_size", "model_device", "PRECISIONS", "check_precision", "full_float32", "slow_here",
    "model_fingerprint", "tensors_fingerprint", "out_of_memory",
    # errors
    "AttackError", "ModelOutputError",
]
