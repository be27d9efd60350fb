"""The named suites: fast, pgd, autoattack (and its plus and rand versions), blackbox, transfer, adaptive.

Builders take eps, norm, seed, num_classes and optional context (``surrogates`` for transfer;
``views`` for adaptive: {label: model → model wrapper}). Attacks a suite needs but this version
of the library lacks make the builder fail with a clear message.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .errors import AttackError
from .suites import ATTACKS, Suite, SuiteStep, make_attack, register_suite


def _need(*names: str) -> None:
    missing = [n for n in names if n not in ATTACKS]
    if missing:
        raise AttackError(f"this suite needs the attacks {', '.join(missing)}, which are not available")


@register_suite("fast")
def fast(*, eps: float, norm: str, seed: int, num_classes: int,
         surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """PGD-20 then FGSM on what PGD left: FGSM breaking more would flag failing gradients."""
    return Suite("fast", [
        SuiteStep("pgd-20", make_attack("pgd", eps=eps, norm=norm, seed=seed, steps=20, alpha=eps * 0.125)),
        SuiteStep("fgsm", make_attack("fgsm", eps=eps, norm=norm, seed=seed), kind="single-step"),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("pgd")
def pgd(*, eps: float, norm: str, seed: int, num_classes: int,
        surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """PGD-50 with 3 restarts (CE), then PGD-50 on the margin loss."""
    return Suite("pgd", [
        SuiteStep("pgd-50-ce", make_attack("pgd", eps=eps, norm=norm, seed=seed, steps=50, alpha=eps * 0.1,
                                           restarts=3)),
        SuiteStep("pgd-50-margin", make_attack("pgd", eps=eps, norm=norm, seed=seed + 1, steps=50, alpha=eps * 0.1,
                                               loss="margin")),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("adaptive")
def adaptive(*, eps: float, norm: str, seed: int, num_classes: int,
             views: dict[str, Callable[[nn.Module], nn.Module]] | None = None,
             surrogates: dict[str, nn.Module] | None = None, eot: int = 0, **_: Any) -> Suite:
    """PGD-50 through each view of the model (BPDA or EOT wrappers; ``eot=N`` adds EOT over N
    passes), then on the model itself, then Square (1000 queries) and transfer."""
    views = dict(views or {})
    for label, view in views.items():
        if isinstance(view, nn.Module) or not callable(view):
            raise AttackError(f"views['{label}'] must be a function from the model to the module the attack "
                              "differentiates (e.g. lambda model: attacks.EOT(model, 8)); a module that already wraps "
                              "the model goes to evaluate(..., gradient_views=)")
    if eot:
        from .adaptive import EOT

        views[f"eot-{eot}"] = lambda model, samples=eot: EOT(model, samples)
    pgd_50 = make_attack("pgd", eps=eps, norm=norm, seed=seed, steps=50, alpha=eps * 0.1)
    steps = [SuiteStep(f"pgd-50 [{label}]", pgd_50, view=view, kind="adaptive") for label, view in views.items()]
    steps.append(SuiteStep("pgd-50", make_attack("pgd", eps=eps, norm=norm, seed=seed, steps=50, alpha=eps * 0.1)))
    steps.append(SuiteStep("square-1000", make_attack("square", eps=eps, norm=norm, seed=seed, queries=1000),
                           kind="black-box"))
    steps.extend(_transfer_steps(eps, norm, seed, surrogates))
    return Suite("adaptive", steps)


def _transfer_steps(eps: float, norm: str, seed: int, surrogates: dict[str, nn.Module] | None) -> list[SuiteStep]:
    """One transfer step from all surrogates together (an ensemble transfers best)."""
    if not surrogates:
        return []
    if norm == "L1":
        raise AttackError("transfer (MI-FGSM on surrogates) has no L1 version; evaluate L1 without surrogates "
                          "(a jpegdl_* model is attacked with transfer from its twin: use Linf or L2 for it)")
    names = list(surrogates)
    attack = make_attack("transfer", eps=eps, norm=norm, seed=seed, surrogates=list(surrogates.values()),
                         surrogate_names=names, steps=20)
    return [SuiteStep(f"transfer [{'+'.join(names)}]", attack, kind="transfer")]


@register_suite("autoattack")
def autoattack(*, eps: float, norm: str, seed: int, num_classes: int,
               surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """AutoAttack, version 'standard': APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000
    queries), each on the points the earlier ones left robust; in L1 (Croce and Hein 2021) APGD-CE has
    5 restarts and APGD-T 5 targets, both over the radii 3·eps, 2·eps, eps. Transfer from ``surrogates``,
    when given, runs last (for JPEG-DL models: the twin without the JPEG layer)."""
    _need("apgd", "apgd-t", "fab-t", "square")
    targets = max(min(9, num_classes - 1), 1)
    l1 = {"restarts": 5, "shrinking_eps": True} if norm == "L1" else {}
    apgd_t_targets = min(5, targets) if norm == "L1" else targets
    return Suite("autoattack", [
        SuiteStep("apgd-ce", make_attack("apgd", eps=eps, norm=norm, seed=seed, steps=100, loss="ce", **l1)),
        SuiteStep("apgd-t", make_attack("apgd-t", eps=eps, norm=norm, seed=seed, steps=100, targets=apgd_t_targets,
                                        shrinking_eps=norm == "L1")),
        SuiteStep("fab-t", make_attack("fab-t", eps=eps, norm=norm, seed=seed, steps=100, targets=targets)),
        SuiteStep("square", make_attack("square", eps=eps, norm=norm, seed=seed, queries=5000), kind="black-box"),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("autoattack_plus")
def autoattack_plus(*, eps: float, norm: str, seed: int, num_classes: int,
                    surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """AutoAttack, version 'plus': APGD-CE and APGD-DLR (5 restarts each), FAB (untargeted, 5 restarts),
    Square (5000 queries), APGD-T and FAB-T (9 targets each), in that order."""
    _need("apgd", "apgd-t", "fab", "fab-t", "square")
    targets = max(min(9, num_classes - 1), 1)
    return Suite("autoattack_plus", [
        SuiteStep("apgd-ce", make_attack("apgd", eps=eps, norm=norm, seed=seed, steps=100, loss="ce", restarts=5)),
        SuiteStep("apgd-dlr", make_attack("apgd", eps=eps, norm=norm, seed=seed, steps=100, loss="dlr", restarts=5)),
        SuiteStep("fab", make_attack("fab", eps=eps, norm=norm, seed=seed, steps=100, restarts=5)),
        SuiteStep("square", make_attack("square", eps=eps, norm=norm, seed=seed, queries=5000), kind="black-box"),
        SuiteStep("apgd-t", make_attack("apgd-t", eps=eps, norm=norm, seed=seed, steps=100, targets=targets)),
        SuiteStep("fab-t", make_attack("fab-t", eps=eps, norm=norm, seed=seed, steps=100, targets=targets)),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("autoattack_rand")
def autoattack_rand(*, eps: float, norm: str, seed: int, num_classes: int,
                    surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """AutoAttack, version 'rand', for randomised defences: APGD-CE and APGD-DLR, each averaging its
    gradients over 20 passes (EOT) at every step."""
    _need("apgd")
    return Suite("autoattack_rand", [
        SuiteStep("apgd-ce", make_attack("apgd", eps=eps, norm=norm, seed=seed, steps=100, loss="ce", eot=20)),
        SuiteStep("apgd-dlr", make_attack("apgd", eps=eps, norm=norm, seed=seed, steps=100, loss="dlr", eot=20)),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("blackbox")
def blackbox(*, eps: float, norm: str, seed: int, num_classes: int,
             surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """Square with 5000 queries, then transfer from the surrogates (if any): no gradient of the model."""
    return Suite("blackbox", [
        SuiteStep("square", make_attack("square", eps=eps, norm=norm, seed=seed, queries=5000), kind="black-box"),
        *_transfer_steps(eps, norm, seed, surrogates),
    ])


@register_suite("transfer")
def transfer(*, eps: float, norm: str, seed: int, num_classes: int,
             surrogates: dict[str, nn.Module] | None = None, **_: Any) -> Suite:
    """Only transfer from the surrogate models."""
    if not surrogates:
        raise AttackError("the 'transfer' suite needs surrogate models (surrogates={name: model})")
    return Suite("transfer", _transfer_steps(eps, norm, seed, surrogates))
