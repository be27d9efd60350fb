"""Sanity checks that catch a broken evaluation (Carlini et al. 2019; AutoAttack's checks).

Each returns a :class:`Flag` or None. They never change a verdict; they are reported with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import verdict
from .core import flat_norm
from .errors import ModelOutputError
from .precision import full_float32
from .results import Flag


def check_output(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ModelOutputError(f"the model returned a {type(logits).__name__}; it must return a B×classes tensor of "
                               "logits (wrap it in a module whose forward returns the logits alone)")
    if logits.dim() != 2:
        raise ModelOutputError(f"the model returned a tensor of shape {tuple(logits.shape)}; it must return B×classes "
                               "logits")
    if int(labels.max()) >= logits.shape[1]:
        raise ModelOutputError(
            f"labels go up to {int(labels.max())} but the model has {logits.shape[1]} outputs; "
            "the model was trained for another number of classes"
        )
    bad = ~torch.isfinite(logits).all(dim=1)
    if bool(bad.any()):
        raise ModelOutputError(
            f"the model returned NaN or inf for {int(bad.sum())} of {logits.shape[0]} clean images; "
            "the weights are broken or the input is not in [0, 1]"
        )


def probabilities_instead_of_logits(logits: torch.Tensor) -> Flag | None:
    """AutoAttack's check_range_output: outputs in [0, 1] whose rows sum to 1."""
    rows = logits.sum(dim=1)
    if logits.min() > -1e-5 and logits.max() < 1 + 1e-5 and bool(((rows - 1).abs() < 1e-5).all()):
        return Flag("probabilities_not_logits",
                    "the model outputs look like probabilities (in [0, 1], rows summing to 1): attacks need "
                    "logits; remove the final softmax")
    return None


def nondeterministic(model: nn.Module, x: torch.Tensor) -> Flag | None:
    """Two forward passes on the same batch must agree (AutoAttack's check_randomized)."""
    with torch.no_grad():
        first, second = model(x).float(), model(x).float()
    change = float((first - second).norm() / first.norm().clamp_min(1e-12))
    if change > 1e-4 or not torch.equal(first.argmax(1), second.argmax(1)):
        return Flag("non_deterministic",
                    "two forward passes on the same images disagree: the model is randomised; "
                    "use an EOT attack (suite 'adaptive') or fix the randomness",
                    {"relative_change": change})
    return None


def gradient_health(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Flag | None:
    """Share of points whose input gradient of CE is all zero, NaN or inf (masked gradients)."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    flat = grad.flatten(1)
    zero = (flat == 0).all(dim=1)
    bad = ~torch.isfinite(flat).all(dim=1)
    if bool(zero.any()) or bool(bad.any()):
        return Flag("zero_or_nan_gradients",
                    f"{int(zero.sum())} of {len(flat)} points have all-zero input gradients and {int(bad.sum())} "
                    "NaN/inf ones: gradients are masked (e.g. rounding, as in a hard JPEG layer); white-box "
                    "numbers are not trustworthy: use BPDA (suite 'adaptive') and black-box attacks",
                    {"zero": int(zero.sum()), "nan_or_inf": int(bad.sum()), "points": len(flat)})
    return None


def invalid_examples(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """Mask of adversarial examples outside the eps-ball, outside [0, 1], or not finite."""
    distance = flat_norm(x_adv - x, norm)
    outside = distance > eps * (1 + 1e-5) + 1e-6
    out_of_range = (x_adv.flatten(1).amin(dim=1) < -1e-6) | (x_adv.flatten(1).amax(dim=1) > 1 + 1e-6)
    return outside | out_of_range | ~torch.isfinite(x_adv.flatten(1)).all(dim=1)


def large_eps_attack_fails(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str,
                           attack_factory: Callable[[float], object]) -> Flag | None:
    """With an eps that allows any image, a working attack must reach (nearly) 0% accuracy."""
    eps = 1.0 if norm == "Linf" else float(x[0].numel()) ** 0.5
    attack = attack_factory(eps)
    x_adv = attack(model, x, y)  # type: ignore[operator]
    with torch.no_grad():
        accuracy = float((model(x_adv).argmax(1) == y).float().mean())
    if accuracy > 0.1:
        return Flag("large_eps_not_zero",
                    f"PGD at eps={eps:g} ({norm}), where any image is reachable, leaves {100 * accuracy:.0f}% of "
                    f"{len(y)} points correct: the attack cannot follow the gradients (masking) or is broken",
                    {"eps": eps, "accuracy": accuracy, "points": len(y)})
    return None


CONVERGENCE_TOLERANCE = 0.005  # the checklist's "less than about 0.5 points" (share of all points)
CONVERGENCE_FACTOR = 5          # the probe runs this many times the steps


@dataclass(frozen=True)
class ProbeContext:
    """What the convergence probe is judged against: the suite step it repeats (``label``), the model
    that gives the verdicts, the number of points the suite left robust (``survivors``) of ``total``,
    and the ball."""

    label: str
    verdict_model: nn.Module
    survivors: int
    total: int
    eps: float
    norm: str


def more_steps_gain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, probe: Callable,
                    context: ProbeContext) -> tuple[Flag | None, dict]:
    """Whether the suite had converged: ``probe`` (its first iterative attack with
    ``CONVERGENCE_FACTOR`` times the steps, from a new random start) runs on ``x``, a sample of the
    points the whole suite left robust. Scaled to all points, the share it breaks estimates how much
    the suite overstates robust accuracy; above ``CONVERGENCE_TOLERANCE`` it is flagged. ``model`` is
    what the probe differentiates (the step's view). The verdicts stay the suite's own."""
    x_adv = probe(model, x, y, index).detach()
    invalid = invalid_examples(x_adv, x, context.eps, context.norm)
    with torch.no_grad(), full_float32():
        logits = context.verdict_model(x_adv).float()
    retired = verdict.retired_now()     # as in a step of the suite (attacks.verdict)
    retired_rows = torch.tensor([i in retired for i in index.tolist()], dtype=torch.bool, device=y.device)
    broken = int(((verdict.broken_by_logits(logits, y) | retired_rows) & ~invalid).sum())
    drop = broken / max(len(y), 1) * context.survivors / max(context.total, 1)
    label = context.label
    summary = {"attack": label, "probe": probe.describe(), "points": len(y), "survivors": context.survivors,
               "broken": broken, "estimated_overstatement": drop}
    if drop > CONVERGENCE_TOLERANCE:
        steps = summary["probe"].get("steps")
        return Flag("not_converged",
                    f"{label} with {steps} steps broke {broken} of {len(y)} points the whole suite left robust: "
                    f"robust accuracy is overstated by about {100 * drop:.1f} points; use more steps or restarts "
                    "(e.g. suite 'autoattack')", summary), summary
    return None, summary


def not_monotone_in_eps(curve: list[tuple[float, float]]) -> Flag | None:
    """Robust accuracy must not rise with eps."""
    ordered = sorted(curve)
    rises = [(a, b) for (e1, a), (e2, b) in zip(ordered, ordered[1:]) if b > a + 1e-12]
    if rises:
        return Flag("accuracy_not_monotone_in_eps",
                    "robust accuracy rises with eps somewhere on the curve: an attack is failing at the larger eps",
                    {"curve": [{"eps": e, "robust_accuracy": a} for e, a in ordered]})
    return None
