"""The distiller interface, the options every method shares, and the method registry.

A distiller turns student and teacher logits into named loss terms::

    terms = distiller.loss(student_logits, teacher_logits, labels, context)   # {"ce": …, "kd": …}

Anything more a method needs comes through two doors only: ``prepare(setup)`` runs once before
training (dataset statistics such as energy thresholds, a pruned teacher copy) and ``context``
gives each step its images, the student and teacher as callables (for extra augmented inputs),
training progress and a seeded random generator.

Every method also accepts the two "Preparing Lessons" adjustments (Wen, Lai and Qian, 2021), which
the paper describes as combinable with other KD methods:

- KA (knowledge adjustment) corrects the teacher where it is wrong: ``ka=ps`` swaps the teacher's
  scores of the true class and of its predicted class (the probability shift; swapping logits swaps
  the probabilities at every temperature), ``ka=lsr`` replaces that sample's target by label
  smoothing (exact at the method's base temperature).
- DTD (dynamic temperature distillation) gives each sample its own temperature
  τ_x = τ₀ + β·(mean_B w − w_x), from a difficulty weight w (``flsw``: (1 − cos(z_s, z_t))^γ;
  ``cwsm``: 1 / max softmax(z_s)), for methods with a temperature (``supports_dtd``).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..bounds import field_range, out_of_range, ranged, shown
from ..config import build
from ..errors import UserError

if TYPE_CHECKING:
    from ..data import BatchLoader


# The ranges every method's temperatures and loss weights are checked against (see ``ranged`` fields):
# below T = 0.1 a softmax of ordinary logits is already one-hot and T² ≈ 0 switches the term off, at
# T = 0 or below it is undefined or inverted; above 100 every distribution is flat. The largest
# published weight is TTM's β = 101; 1000 leaves room for a sweep without letting a typo (1e6) through.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 100.0
MAX_WEIGHT = 1000.0


def temperature_field(default: float) -> float:
    return ranged(default, MIN_TEMPERATURE, MAX_TEMPERATURE)


def weight_field(default: float) -> float:
    return ranged(default, 0.0, MAX_WEIGHT)


def rate_field(default: float, *, one: bool = False) -> float:
    """A share of the samples (or a mixing weight): [0, 1), or [0, 1] with ``one``."""
    return ranged(default, 0.0, 1.0, high_open=not one)


@dataclass
class CommonOptions:
    """Options of every method (KA and DTD, combinable with any of them). Every number declares its
    range (``ranged``); :func:`create_distiller` checks them all before training."""

    ka: Literal["none", "ps", "lsr"] = "none"
    ka_epsilon: float = ranged(0.1, 0.0, 1.0, low_open=True, high_open=True)  # ka=lsr: mass on the wrong classes
    dtd: bool = False
    dtd_weight: Literal["flsw", "cwsm"] = "flsw"
    dtd_beta: float = ranged(2.0, 0.0, 100.0)
    dtd_gamma: float = ranged(1.0, 0.0, 10.0)
    dtd_min_temperature: float = temperature_field(0.5)


@dataclass
class StepContext:
    """What one training step offers a method beyond the logits.

    Under torchrun the logits and labels given to ``loss`` are those of the global batch, but
    ``images`` are this process's share: methods that use them (``calls_student_again``) run in
    one process only."""

    images: torch.Tensor
    labels: torch.Tensor
    progress: float  # epochs done, fractional
    student: nn.Module
    teacher: Callable[[torch.Tensor], torch.Tensor]  # teacher logits (fp32, no gradient) of any images
    generator: torch.Generator  # seeded by (seed, epoch, step): reproducible augmentation


@dataclass
class DistillSetup:
    """What ``prepare`` may use: the teacher (eval mode, on the device), the augmented training
    batches (as training sees them) and the pair's architectures."""

    teacher: Callable[[torch.Tensor], torch.Tensor]
    teacher_model: nn.Module
    train_batches: "BatchLoader"
    device: torch.device
    teacher_arch: str
    student_arch: str


class Distiller:
    """Base of every method. Subclasses set ``Options`` (a dataclass extending
    :class:`CommonOptions`), ``source`` and implement :meth:`loss`."""

    Options: ClassVar[type] = CommonOptions
    source: ClassVar[str] = ""
    supports_dtd: ClassVar[bool] = False
    base_temperature_option: ClassVar[str | None] = "temperature"

    def __init__(self, options: Any) -> None:
        self.options = options
        if options.dtd and not self.supports_dtd:
            raise UserError(f"{type(self).__name__} sets its own per-sample temperatures; dtd=true does not apply "
                            "to it")

    # ------------------------------------------------------------------ preparation and state

    def attach(self, teacher: nn.Module) -> None:
        """Run at every start, fresh or resumed; override to build helpers from the teacher."""

    def prepare(self, setup: DistillSetup) -> None:
        """Run once before training; override to compute statistics or helpers."""

    def calls_student_again(self) -> bool:
        """Whether a step may call the student a second time (on augmented copies). Under torchrun each
        rank would decide that on its own share of the batch, and the ranks' collectives would no
        longer pair up, so such methods run in one process only."""
        return False

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-able state from :meth:`prepare`, kept in checkpoints so a resume skips it."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def teacher_is_cacheable(self) -> bool:
        """Whether :meth:`teacher_forward` gives a sample the same logits in every batch (the teacher cache
        relies on it)."""
        return True

    def teacher_forward(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for ``images`` (R2KD mixes in a pruned copy here)."""
        return teacher(images)

    # ------------------------------------------------------------------ shared adjustments

    def base_temperature(self) -> float:
        name = self.base_temperature_option
        return float(getattr(self.options, name)) if name else 1.0

    def adjust_teacher(self, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Knowledge adjustment of the teacher's logits where its prediction is wrong."""
        if self.options.ka == "none":
            return teacher
        # on every row, masked by torch.where: selecting the wrong rows would be a host sync on CUDA per step
        predicted = teacher.argmax(dim=1, keepdim=True)
        wrong = predicted != labels[:, None]
        if self.options.ka == "ps":
            true_score, predicted_score = teacher.gather(1, labels[:, None]), teacher.gather(1, predicted)
            adjusted = teacher.scatter(1, labels[:, None], torch.where(wrong, predicted_score, true_score))
            return adjusted.scatter(1, predicted, torch.where(wrong, true_score, adjusted.gather(1, predicted)))
        # lsr: softmax(z/T) of these logits is the label-smoothing target at the base temperature
        classes = teacher.shape[1]
        eps = self.options.ka_epsilon
        smooth = torch.full_like(teacher, eps / (classes - 1)).scatter(1, labels[:, None], 1.0 - eps)
        return torch.where(wrong, self.base_temperature() * smooth.log(), teacher)

    def temperature(self, student: torch.Tensor, teacher: torch.Tensor) -> float | torch.Tensor:
        """The base temperature, or with ``dtd`` one temperature per sample (B, detached)."""
        base = self.base_temperature()
        if not self.options.dtd:
            return base
        with torch.no_grad():
            if self.options.dtd_weight == "flsw":
                weight = (1.0 - F.cosine_similarity(student, teacher, dim=1)).clamp_min(0).pow(self.options.dtd_gamma)
            else:
                weight = 1.0 / (F.softmax(student, dim=1).max(dim=1).values + 1e-3)
            tau = base + self.options.dtd_beta * (weight.mean() - weight)
            return tau.clamp_min(self.options.dtd_min_temperature)

    # ------------------------------------------------------------------ the method

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass(frozen=True)
class MethodEntry:
    name: str
    cls: type[Distiller]
    preset: dict[str, Any]  # option values that define this entry on top of the class defaults
    summary: str


_METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, summary: str, **preset: Any) -> Callable[[type[Distiller]], type[Distiller]]:
    """Register a distiller class under ``name`` (a class may serve several names with presets)."""

    def wrap(cls: type[Distiller]) -> type[Distiller]:
        add_method(name, cls, summary, **preset)
        return cls

    return wrap


def add_method(name: str, cls: type[Distiller], summary: str, **preset: Any) -> None:
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    unranged = _numbers_without_range(cls.Options)
    if unranged:
        raise ValueError(f"{cls.__name__}.Options must declare the range of {', '.join(unranged)} (bounds.ranged)")
    _METHODS[name] = MethodEntry(name, cls, dict(preset), summary)


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_entry(name: str) -> MethodEntry:
    try:
        return _METHODS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_METHODS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown distillation method '{name}'{hint}; choose one of: "
                        f"{', '.join(list_methods())}") from None


def default_options(name: str) -> dict[str, Any]:
    """The entry's option values: class defaults with its preset applied."""
    entry = method_entry(name)
    return {**dataclasses.asdict(entry.cls.Options()), **entry.preset}


def _numbers_without_range(options_class: type) -> list[str]:
    """The int, float and list-of-float options that declare no range."""
    hints = typing.get_type_hints(options_class)
    numeric = (int, float, list[float], list[int])
    return [f.name for f in dataclasses.fields(options_class) if hints[f.name] in numeric and field_range(f) is None]


def create_distiller(name: str, options: dict[str, Any] | None = None) -> Distiller:
    """Build method ``name`` with ``options`` over its defaults; unknown options, wrong types and values
    outside an option's declared range are a UserError."""
    entry = method_entry(name)
    values = {**entry.preset, **(options or {})}
    built = build(entry.cls.Options, values, prefix="distill.options.")
    bad = out_of_range(built)
    if bad is not None:
        key, value, allowed = bad
        default = default_options(name)[key.split("[")[0]]
        raise UserError(f"distill.options.{key} must {allowed.requirement()}, got {shown(value)} "
                        f"({name}'s default: {shown(default)}); see docs/methods.md for what it does")
    return entry.cls(built)
