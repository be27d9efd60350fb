"""Adversarial attacks and robustness evaluation for any nn.Module mapping [0, 1] images to logits.

    from attacks import evaluate
    result = evaluate(model, x, y, suite="autoattack", eps=8/255, norm="Linf")
    result.robust_accuracy, result.flags, result.to_dict()

This package stands alone: it never imports the robust-kd application.
"""

from . import apgd, cw, fab, fgsm, pgd, square, transfer  # noqa: F401  (registration)
from .adaptive import BPDA, EOT
from .apgd import APGD, APGDT
from .core import Attack, CountingModel, dlr_loss, margin_loss, project
from .errors import AttackError, ModelOutputError
from .cw import CW
from .evaluate import evaluate
from .fab import FABT
from .fgsm import FGSM
from .pgd import PGD
from .square import Square
from .results import AttackRecord, EvaluationResult, Flag, convergence_words, eps_label
from .transfer import Ensemble, Transfer, transfer_matrix
from .suites import ATTACKS, SUITES, Suite, SuiteStep, build_suite, list_suites, make_attack, register_attack, register_suite
from . import builtin_suites  # noqa: F401,E402  (registration; after the attacks)

__all__ = [
    "APGD", "APGDT", "ATTACKS", "CW", "FABT", "SUITES", "Attack", "AttackError", "AttackRecord", "BPDA", "CountingModel",
    "EOT", "EvaluationResult", "FGSM", "Flag", "Square", "ModelOutputError", "PGD", "Suite", "SuiteStep", "build_suite", "convergence_words", "dlr_loss", "eps_label", "evaluate",
    "list_suites", "make_attack", "Ensemble", "Transfer", "transfer_matrix", "margin_loss", "project", "register_attack", "register_suite",
]
