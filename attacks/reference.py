"""The reference engine: a suite's steps computed by the packages they come from.

A number that goes into a paper is often asked to be computed with the original AutoAttack. With
``evaluate(..., engine="reference")`` every step of the suite is built as ours builds it, then
handed to the reference implementation with the same settings: APGD, APGD-T, FAB-T and Square to
pyautoattack (the code of AutoAttack's authors), PGD, FGSM and CW to torchattacks. Everything around
the attacks stays ours (the clean pass, the batches of still-robust points in AutoAttack's order,
the float32 verdict with its ball check, the state file and resuming, the flags), so the results
file and the report look the same and say ``engine: reference``.

The batches are AutoAttack's own: the points still robust, in order, ``batch_size`` at a time, each
attack seeded with the evaluation's seed at every batch. So ``evaluate(..., "autoattack",
engine="reference", batch_size=B)`` gives the verdicts of pyautoattack's
``AutoAttack(version="standard", seed=seed).run_standard_evaluation(x, y, bs=B)`` point for point
(``tests/test_reference.py``).

A step the reference packages cannot compute (transfer, a step through a BPDA or EOT view, PGD on
the margin loss, FGSM in L2, CW with a binary search) makes :func:`reference_suite` fail before
anything runs, naming every such step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable

import torch
from torch import nn

from .core import Attack
from .errors import AttackError
from .suites import Suite, SuiteStep

Runner = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
# our attack → (package, runner) or the reason the reference cannot compute it
Translation = Callable[[Attack], "tuple[str, Runner] | str"]
TRANSLATIONS: dict[str, Translation] = {}


def translates(name: str) -> Callable[[Translation], Translation]:
    def register(function: Translation) -> Translation:
        TRANSLATIONS[name] = function
        return function
    return register


def _version(package: str) -> str:
    try:
        return f"{package} {metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


@translates("apgd")
def _apgd(a: Any) -> tuple[str, Runner]:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack.autopgd_base import APGDAttack

        return APGDAttack(model, n_iter=a.steps, norm=a.norm, n_restarts=a.restarts, eps=a.eps, seed=a.seed,
                          loss=a.loss, eot_iter=a.eot, rho=a.rho, device=x.device,
                          use_largereps=a.shrinking_eps).perturb(x, y)
    return _version("pyautoattack") + " APGDAttack", run


@translates("apgd-t")
def _apgd_t(a: Any) -> tuple[str, Runner]:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack.autopgd_base import APGDAttack_targeted

        return APGDAttack_targeted(model, n_iter=a.steps, norm=a.norm, n_restarts=a.restarts, eps=a.eps,
                                   seed=a.seed, rho=a.rho, n_target_classes=a.targets, device=x.device,
                                   use_largereps=a.shrinking_eps).perturb(x, y)
    return _version("pyautoattack") + " APGDAttack_targeted", run


@translates("fab-t")
@translates("fab")
def _fab(a: Any) -> tuple[str, Runner]:
    targeted = a.name == "fab-t"

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack.fab_pt import FABAttack_PT

        return FABAttack_PT(model, norm=a.norm, n_restarts=a.restarts, n_iter=a.steps, eps=a.eps,
                            alpha_max=a.alpha_max, eta=a.eta, beta=a.beta, seed=a.seed, targeted=targeted,
                            n_target_classes=getattr(a, "targets", 9), device=x.device).perturb(x, y)
    return _version("pyautoattack") + f" FABAttack_PT ({'targeted' if targeted else 'untargeted'})", run


@translates("square")
def _square(a: Any) -> tuple[str, Runner]:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from pyautoattack.square import SquareAttack

        return SquareAttack(model, norm=a.norm, n_queries=a.queries, eps=a.eps, p_init=a.p_init, n_restarts=1,
                            seed=a.seed, resc_schedule=a.rescale_schedule, device=x.device).perturb(x, y)
    return _version("pyautoattack") + " SquareAttack", run


@translates("pgd")
def _pgd(a: Any) -> tuple[str, Runner] | str:
    if a.loss != "ce":
        return f"torchattacks' PGD has no {a.loss} loss"

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        best = x.clone()
        todo = torch.ones(len(y), dtype=torch.bool, device=x.device)
        for restart in range(a.restarts):   # restarts: fresh random starts on the points still unbroken
            rows = todo.nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                break
            torch.manual_seed(a.seed + restart)
            pgd = (torchattacks.PGD if a.norm == "Linf" else torchattacks.PGDL2)(
                model, eps=a.eps, alpha=a.step_size(), steps=a.steps, random_start=a.random_start)
            best[rows] = pgd(x[rows], y[rows])
            with torch.no_grad():
                todo[rows] = model(best[rows]).argmax(1) == y[rows]
        return best
    return _version("torchattacks") + (" PGD" if a.norm == "Linf" else " PGDL2"), run


@translates("fgsm")
def _fgsm(a: Any) -> tuple[str, Runner] | str:
    if a.norm != "Linf":
        return "torchattacks' FGSM is Linf only"

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        return torchattacks.FGSM(model, eps=a.eps)(x, y)
    return _version("torchattacks") + " FGSM", run


@translates("cw-l2")
def _cw(a: Any) -> tuple[str, Runner] | str:
    if a.search_steps != 1:
        return "torchattacks' CW has no binary search over c (search_steps 1)"

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        import torchattacks

        return torchattacks.CW(model, c=a.c, kappa=a.kappa, steps=a.steps, lr=a.lr)(x, y)
    return _version("torchattacks") + " CW", run


@dataclass(eq=False)
class ReferenceAttack(Attack):
    """Our attack's settings, computed by the reference package (``package``). Its examples are the
    reference's; a point's verdict is still the evaluation's own float32 check in the ball."""

    ours: Any = None            # the attack of ours it stands for (an Attack)
    package: str = ""
    runner: Any = None

    def __post_init__(self) -> None:        # the settings were checked when ``ours`` was made
        self.eps, self.norm, self.seed = self.ours.eps, self.ours.norm, self.ours.seed
        self.name = self.ours.name

    @property
    def iterative(self) -> bool:
        return self.ours.iterative

    def more_steps(self, factor: int) -> "ReferenceAttack":
        return reference_attack(self.ours.more_steps(factor))

    def classes_needed(self) -> int:
        return self.ours.classes_needed()

    def classes_reason(self) -> str:
        return self.ours.classes_reason()

    def describe(self) -> dict:
        return {**self.ours.describe(), "engine": "reference", "computed_by": self.package}

    def result_settings(self) -> dict:
        return {**self.ours.result_settings(), "engine": "reference", "computed_by": self.package}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # the reference packages seed torch's global generators; the caller's stay as they were
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            return self.runner(model, x, y).detach()


def reference_attack(ours: Attack) -> ReferenceAttack:
    translated = _translation(ours)
    if isinstance(translated, str):
        raise AttackError(f"the reference engine cannot run {ours.name}: {translated}")
    return ReferenceAttack(ours=ours, package=translated[0], runner=translated[1])


def _translation(ours: Attack) -> tuple[str, Runner] | str:
    translation = TRANSLATIONS.get(ours.name)
    if translation is None:
        return f"no reference package implements '{ours.name}'"
    return translation(ours)


def _why_not(step: SuiteStep) -> str | None:
    if step.view is not None:
        return "it attacks through a view of the model (BPDA, EOT or a surrogate), which the reference packages " \
               "cannot be given"
    translated = _translation(step.attack)
    return translated if isinstance(translated, str) else None


def reference_suite(suite: Suite) -> Suite:
    """The same suite with every step computed by its reference package; one error naming every step the
    reference cannot compute (use the default engine, or a suite without them)."""
    refused = [(step.label, why) for step in suite.steps if (why := _why_not(step)) is not None]
    if refused:
        listed = "; ".join(f"'{label}' ({why})" for label, why in refused)
        raise AttackError(f"the reference engine cannot run {len(refused)} step(s) of suite '{suite.name}': {listed}. "
                          "Run it with our engine (the default), or drop those steps")
    steps = [dataclasses.replace(step, attack=reference_attack(step.attack)) for step in suite.steps]
    return Suite(suite.name, steps, suite.caveat)


def computed_by(suite: Suite) -> dict[str, str]:
    """{step label: the package and class that computed it} (empty for our own engine)."""
    return {s.label: s.attack.package for s in suite.steps if isinstance(s.attack, ReferenceAttack)}


def _verdict(robust: bool, broken_by: str | None) -> str:
    return "robust" if robust else ("wrong on clean input" if broken_by == "clean" else f"broken by {broken_by}")


def cross_check(ours: Any, reference: Any) -> dict[str, Any]:
    """Two evaluations of the same points (``EvaluationResult``s: our engine's and the reference's) side by
    side: both robust accuracies and wall times, and every point whose verdict differs. A point robust
    for us and broken by the reference means our number is too high there (``robust_only_for_ours``)."""
    if (ours.n_examples, ours.eps, ours.norm, ours.points["label"]) != \
            (reference.n_examples, reference.eps, reference.norm, reference.points["label"]):
        raise AttackError("cross_check compares two evaluations of the same points, eps and norm")
    differ = [{"index": i, "ours": _verdict(a, ours.points["broken_by"][i]),
               "reference": _verdict(b, reference.points["broken_by"][i])}
              for i, (a, b) in enumerate(zip(ours.points["robust"], reference.points["robust"])) if a != b]
    return {
        "ours": {"robust_accuracy": ours.robust_accuracy, "seconds": ours.seconds},
        "reference": {"robust_accuracy": reference.robust_accuracy, "seconds": reference.seconds,
                      "computed_by": dict(reference.computed_by)},
        "points": ours.n_examples,
        "differ": differ,
        "robust_only_for_ours": sum(d["ours"] == "robust" for d in differ),
        "robust_only_for_reference": sum(d["reference"] == "robust" for d in differ),
    }


def cross_check_words(check: dict[str, Any]) -> str:
    """The cross-check in one line (for the terminal and the report)."""
    ours, reference = check["ours"], check["reference"]
    head = (f"ours {100 * ours['robust_accuracy']:.2f}% in {ours['seconds']:.1f} s, reference "
            f"{100 * reference['robust_accuracy']:.2f}% in {reference['seconds']:.1f} s")
    if not check["differ"]:
        return f"{head}; all {check['points']} verdicts agree"
    shown = ", ".join(f"#{d['index']} (ours: {d['ours']}; reference: {d['reference']})" for d in check["differ"][:8])
    more = f" and {len(check['differ']) - 8} more" if len(check["differ"]) > 8 else ""
    return f"{head}; {len(check['differ'])} of {check['points']} verdicts differ: {shown}{more}"
