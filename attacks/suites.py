"""Attack and suite registries.

A suite is an ordered list of steps; :func:`attacks.evaluate` runs each step only on the points
every earlier step left robust. A step is an attack plus, optionally, a *view*: the model the
attack computes gradients or queries on (a BPDA or EOT wrapper, a surrogate), while the verdict
is always taken on the evaluated model itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from .core import Attack
from .errors import AttackError
from .results import eps_label

ATTACKS: dict[str, type[Attack]] = {}


def register_attack(cls: type[Attack]) -> type[Attack]:
    ATTACKS[cls.name] = cls
    return cls


def attack_class(name: str) -> type[Attack]:
    try:
        return ATTACKS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(ATTACKS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise AttackError(f"unknown attack '{name}'{hint}; choose one of: {', '.join(sorted(ATTACKS))}") from None


def setting_names(cls: type[Attack]) -> list[str]:
    """The settings a suite file's entry may give an attack: its fields but those the evaluation sets
    (eps, norm, seed) or models give (surrogates), and the entry's own keys (label, seed_offset, and
    alpha_fraction where the attack has an alpha)."""
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("eps", "norm", "seed", "surrogates")]
    return [*fields, "label", "seed_offset", *(["alpha_fraction"] if "alpha" in fields else [])]


def make_attack(name: str, /, **settings: Any) -> Attack:
    """An attack from its registry name and settings (e.g. from a YAML suite), each setting checked
    against its declared type, so that ``steps: many`` is one clear error and not a failure mid-run."""
    cls = attack_class(name)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise AttackError(f"attack '{name}' has no setting {', '.join(unknown)}; its settings: "
                          f"{', '.join(setting_names(cls))}")
    return cls(**settings)     # Attack.__post_init__ checks each setting against its declared type


@dataclass
class SuiteStep:
    label: str
    attack: Attack
    view: Callable[[nn.Module], nn.Module] | None = None  # the model the attack sees; None: the model itself
    kind: str = "white-box"  # white-box, single-step, black-box, transfer, adaptive


@dataclass
class Suite:
    name: str
    steps: list[SuiteStep] = field(default_factory=list)
    caveat: str = ""  # what its numbers must not be read as (e.g. a reduced AutoAttack); kept with results


SuiteBuilder = Callable[..., Suite]
SUITES: dict[str, SuiteBuilder] = {}
# L1: 12, the CIFAR-10 radius of Croce and Hein's L1 evaluations ("Mind the box", ICCV 2021)
DEFAULT_EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}


def register_suite(name: str) -> Callable[[SuiteBuilder], SuiteBuilder]:
    def wrap(builder: SuiteBuilder) -> SuiteBuilder:
        SUITES[name] = builder
        return builder

    return wrap


def list_suites() -> list[str]:
    return sorted(SUITES)


def build_suite(suite: str | Suite | Mapping[str, Any], *, eps: float, norm: str, seed: int,
                num_classes: int, **context: Any) -> Suite:
    """A suite by name (registry), from a mapping (user-defined, e.g. YAML), or as given."""
    if isinstance(suite, Suite):
        for step in suite.steps:    # it runs as built: an attack built for another ball would be labelled with this one
            attack = step.attack
            if attack.norm != norm or not math.isclose(float(attack.eps), eps, rel_tol=1e-9, abs_tol=1e-12):
                raise AttackError(
                    f"suite '{suite.name}': step '{step.label}' attacks {attack.norm} eps "
                    f"{eps_label(float(attack.eps), attack.norm)}, but the evaluation is {norm} eps "
                    f"{eps_label(eps, norm)}; a Suite's attacks run as built, so build them with the "
                    "evaluation's eps and norm, or give the suite as a mapping "
                    "({'attacks': [{'attack': 'pgd', ...}]}), "
                    "whose attacks take eps and norm from the evaluation")
        return suite
    if isinstance(suite, Mapping):
        return suite_from_mapping(suite, eps=eps, norm=norm, seed=seed, num_classes=num_classes, **context)
    if suite not in SUITES:
        close = difflib.get_close_matches(suite, list(SUITES), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if str(suite).endswith((".yaml", ".yml")) or not close:
            hint += ("; a suite file (e.g. robust-kd's configs/suites/autoattack_quick.yaml) is read with "
                     "yaml.safe_load and passed as a mapping")
        raise AttackError(f"unknown suite '{suite}'{hint}; choose one of: {', '.join(list_suites())}")
    return SUITES[suite](eps=eps, norm=norm, seed=seed, num_classes=num_classes, **context)


def context_keywords() -> set[str]:
    """The context the registered suite builders take (``surrogates``, ``views``, ``eot``, ...), past
    eps, norm, seed and num_classes."""
    found = {"surrogates"}      # suite_from_mapping's
    for builder in SUITES.values():
        found.update(name for name, p in inspect.signature(builder).parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in ("eps", "norm", "seed", "num_classes"))
    return found


SUITE_KEYS = {"name", "description", "caveat", "attacks", "transfer"}


def suite_from_mapping(data: Mapping[str, Any], *, eps: float, norm: str, seed: int, num_classes: int | None = None,
                       surrogates: Mapping[str, nn.Module] | None = None, **_: Any) -> Suite:
    """A user-defined suite: ``{name, attacks: [{attack: <name>, label: …, <setting>: …}], transfer, caveat}``.

    eps, norm and seed are filled in; ``alpha_fraction: f`` sets ``alpha = f·eps``, ``seed_offset: k``
    gives the attack seed + k; ``transfer: true``
    appends a transfer step from the surrogate models when there are any.
    """
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise AttackError(f"unknown suite key(s) {', '.join(unknown)}; a suite has: {', '.join(sorted(SUITE_KEYS))}")
    if not isinstance(data.get("attacks"), list) or not data["attacks"]:
        raise AttackError("a suite needs a non-empty list 'attacks' of {attack: <name>, <setting>: <value>}")
    steps = []
    for entry in data["attacks"]:
        if not isinstance(entry, Mapping):
            raise AttackError(f"suite entry {entry!r} must be a mapping like {{attack: pgd, steps: 20}}")
        entry = dict(entry)
        name = entry.pop("attack", None)
        if name is None:
            raise AttackError(f"suite entry {entry} has no 'attack' name")
        label = str(entry.pop("label", name))
        if label == "clean":
            raise AttackError("suite entry label 'clean' is reserved (it marks the points wrong on clean input); "
                              "choose another label")
        for setting, option in (("eps", "--eps"), ("norm", "--norm"), ("seed", "--seed")):
            if setting in entry:    # the results are labelled with the evaluation's: an entry may not change it
                hint = "; seed_offset shifts one entry's seed" if setting == "seed" else ""
                raise AttackError(f"suite entry '{label}' sets {setting}; the evaluation's {setting} ({option}) "
                                  f"applies to every attack{hint}")
        if "alpha_fraction" in entry and "alpha" in entry:
            raise AttackError(f"suite entry '{label}' sets both alpha and alpha_fraction; keep one")
        targets = entry.get("targets")
        if num_classes is not None and isinstance(targets, int) and targets > num_classes - 1:
            raise AttackError(f"suite entry '{label}': targets {targets} is more than the model's other classes "
                              f"({num_classes - 1})")
        if "alpha_fraction" in entry:
            fraction = entry.pop("alpha_fraction")
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not fraction > 0:
                raise AttackError(f"suite entry '{label}': alpha_fraction must be a positive number, got {fraction!r}")
            entry["alpha"] = float(fraction) * eps
        offset = entry.pop("seed_offset", 0)
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise AttackError(f"suite entry '{label}': seed_offset must be an integer, got {offset!r}")
        attack = make_attack(name, **{"eps": eps, "norm": norm, "seed": seed + offset, **entry})
        steps.append(SuiteStep(label, attack, kind=kind_of(attack)))
    if not isinstance(data.get("transfer", False), bool):
        raise AttackError(f"a suite's 'transfer' must be true or false, got {data['transfer']!r}")
    repeated = repeated_labels(steps)
    if repeated:
        raise AttackError(f"more than one suite entry is labelled {', '.join(repeated)}; give each its own 'label'")
    if data.get("transfer") and surrogates:
        names = list(surrogates)
        attack = make_attack("transfer", eps=eps, norm=norm, seed=seed, surrogates=list(surrogates.values()),
                             surrogate_names=names)
        steps.append(SuiteStep(f"transfer [{'+'.join(names)}]", attack, kind="transfer"))
    caveat = data.get("caveat", "")
    if not isinstance(caveat, str):
        raise AttackError("a suite's 'caveat' must be text")
    return Suite(str(data.get("name", "custom")), steps, caveat=" ".join(caveat.split()))


def repeated_labels(steps: list[SuiteStep]) -> list[str]:
    """Labels used by more than one step (a step's label keys its verdicts and its resume state)."""
    labels = [step.label for step in steps]
    return sorted({label for label in labels if labels.count(label) > 1})


def kind_of(attack: Attack) -> str:
    if attack.name == "transfer":
        return "transfer"
    if not attack.white_box:
        return "black-box"
    return "single-step" if getattr(attack, "single_step", False) else "white-box"
