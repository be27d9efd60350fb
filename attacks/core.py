"""Shared pieces of every attack: norms and projections, losses, the counting model wrapper, and
the :class:`Attack` base class with its uniform call ``attack(model, x, y) -> x_adv``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .errors import AttackError
from .inputs import images_and_labels
from .settings import wrong_setting

NORMS = ("Linf", "L2")
AUTOATTACK_NORMS = ("Linf", "L2", "L1")   # the attacks of AutoAttack's versions (its L1 one: Croce and Hein 2021)
COUNTS = ("steps", "restarts", "queries", "targets", "search_steps", "eot")  # settings that must be at least 1


# ---------------------------------------------------------------- geometry


def flat_norm(x: torch.Tensor, norm: str) -> torch.Tensor:
    flat = x.flatten(1)
    if norm == "L1":
        return flat.abs().sum(dim=1)
    return flat.abs().amax(dim=1) if norm == "Linf" else flat.norm(dim=1)


def _on_device(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A number as a tensor on ``like``'s device, filled there (``as_tensor`` of a Python number on
    CUDA is a host-to-device copy, and a stream sync, on every step)."""
    if isinstance(value, torch.Tensor):
        return value.to(like.device, like.dtype)
    return torch.full((), float(value), dtype=like.dtype, device=like.device)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Back into the eps-ball around x (Linf: clamp; L2: rescale) and into [0, 1]."""
    delta = x_adv - x
    if norm == "Linf":
        eps_t = _on_device(eps, x)
        eps_t = eps_t.view(-1, *([1] * (x.dim() - 1))) if eps_t.dim() else eps_t
        delta = torch.maximum(torch.minimum(delta, eps_t), -eps_t)
    else:
        norms = flat_norm(delta, "L2").clamp_min(1e-12)
        eps_t = _on_device(eps, x).expand_as(norms)
        factor = torch.minimum(torch.ones_like(norms), eps_t / norms)
        delta = delta * factor.view(-1, *([1] * (x.dim() - 1)))
    return (x + delta).clamp(0.0, 1.0)


def normalized_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent direction of unit size in the norm: sign for Linf, grad/‖grad‖₂ for L2."""
    if norm == "Linf":
        return grad.sign()
    return grad / flat_norm(grad, "L2").clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))


# ---------------------------------------------------------------- losses


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """max_{j≠y} z_j − z_y per sample (positive = misclassified)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), -torch.inf).amax(dim=1)
    return other - true


def _enough_classes(logits: torch.Tensor, needed: int, loss: str) -> None:
    if logits.shape[1] < needed:
        raise AttackError(f"the {loss} loss needs at least {needed} classes; the model has {logits.shape[1]}: "
                          "use the cross-entropy loss (loss='ce') or another attack")


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce and Hein 2020), untargeted, per sample."""
    _enough_classes(logits, 3, "DLR")
    ordered, _ = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_true = (ordered[:, -1] == true).to(logits.dtype)
    best_other = ordered[:, -2] * top_is_true + ordered[:, -1] * (1.0 - top_is_true)
    return -(true - best_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), per sample."""
    _enough_classes(logits, 4, "targeted DLR")
    ordered, _ = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


# ---------------------------------------------------------------- the model, counted


class CountingModel(nn.Module):
    """Wraps a model to count forward and backward passes per image (for the results' cost fields)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.forwards = 0
        self.backwards = 0
        self.listener: Callable[[], None] | None = None   # called after every forward pass (progress)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += x.shape[0]
        out = self.model(x)
        if self.listener is not None:
            self.listener()
        if out.requires_grad:
            batch = x.shape[0]

            def count(grad: torch.Tensor) -> torch.Tensor:
                self.backwards += batch
                return grad

            out.register_hook(count)
        return out


def model_device(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


# Points per batch when the caller gives none. On a 2-core CPU, evaluate is as fast with 64 points
# per batch as with 256 (benchmarks/attack_batch.py: 1.08x), and a smaller batch shows progress
# sooner and loses less when an evaluation is interrupted; a GPU needs wide passes to be busy.
AUTO_BATCH_SIZE = {"cpu": 64, "cuda": 256}


def auto_batch_size(device: torch.device | str) -> int:
    return AUTO_BATCH_SIZE.get(torch.device(device).type, 256)


# ---------------------------------------------------------------- the attack base class


@dataclass
class Attack:
    """Base of every attack: settings as fields, ``attack(model, x, y, index) -> x_adv``.

    ``model`` maps images in [0, 1] to logits and is in eval mode; ``index`` (B) are the points'
    indices in the evaluation, which seed their randomness (see :mod:`attacks.rng`); without it
    the batch positions are used. ``x_adv`` stays in [0, 1] and within ``eps`` of ``x``.
    """

    eps: float = 8 / 255
    norm: str = "Linf"
    seed: int = 0
    name: ClassVar[str] = "attack"
    norms: ClassVar[tuple[str, ...]] = NORMS
    white_box: ClassVar[bool] = True
    speed_only: ClassVar[tuple[str, ...]] = ()  # settings that change how fast it runs, never its result

    def __post_init__(self) -> None:
        wrong = wrong_setting(type(self), {f.name: getattr(self, f.name) for f in fields(self)})
        if wrong is not None:
            raise AttackError(f"attack '{self.name}': {wrong}")
        if self.norm not in self.norms:
            hint = ("; in L1 use suite autoattack or the attacks apgd, apgd-t, fab, fab-t, square"
                    if self.norm == "L1" else "")
            raise AttackError(f"{self.name} supports {' and '.join(self.norms)}, not '{self.norm}'{hint}")
        limit = {"Linf": 1.0, "L2": 1e3, "L1": 1e6}.get(self.norm, 1e3)
        if not 0.0 <= float(self.eps) <= limit:
            raise AttackError(f"{self.name}: eps must lie in [0, {limit}] for {self.norm} in [0, 1] pixel units, "
                              f"got {self.eps}")
        for setting in COUNTS:
            value = getattr(self, setting, None)
            if isinstance(value, int) and value < 1:
                raise AttackError(f"{self.name}: {setting} must be at least 1, got {value}")
        alpha = getattr(self, "alpha", None)
        if alpha is not None and not float(alpha) >= 0:
            raise AttackError(f"{self.name}: alpha (the step size) must not be negative, got {alpha}")

    def result_settings(self) -> dict:
        """:meth:`describe` without the speed-only settings: what decides the adversarial examples."""
        return {k: v for k, v in self.describe().items() if k not in self.speed_only}

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 index: torch.Tensor | None = None) -> torch.Tensor:
        """``x_adv`` for images ``x`` and labels ``y`` (tensors, numpy arrays or lists); ``model``
        runs in eval mode for the call, as in torchattacks, so that batch norm statistics are not
        updated by the attack, and gets its training modes back afterwards."""
        x, y = images_and_labels(x, y, model)
        if index is None:
            index = torch.arange(x.shape[0], device=x.device)
        if x.shape[0] == 0:
            return x.clone()
        training = [m for m in model.modules() if m.training]
        for module in training:
            module.training = False
        try:
            return self.perturb(model, x, y, index.to(x.device))
        finally:
            for module in training:
                module.training = True

    @property
    def iterative(self) -> bool:
        """Whether it takes ``steps`` (the convergence check reruns the first such step with more)."""
        return "steps" in self.__dataclass_fields__

    def more_steps(self, factor: int) -> "Attack":
        """The same attack with ``factor`` times the steps and its next seed (the convergence probe)."""
        return replace(self, steps=factor * self.steps, seed=self.seed + 1)

    def classes_needed(self) -> int:
        """The fewest classes a model may have for this attack."""
        return 2

    def classes_reason(self) -> str:
        return "it needs a wrong class to aim at"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"attack": self.name, **asdict(self)}


def input_gradient(model: nn.Module, x: torch.Tensor, loss_fn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-sample loss, logits, d(sum loss)/dx) at x."""
    x = x.detach().requires_grad_(True)
    logits = model(x)
    loss = loss_fn(logits.float())
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), logits.detach(), grad.detach()
