"""What the trainer minimises. Distillation methods plug in here as other objectives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batch

if TYPE_CHECKING:
    from .trainer import Trainer


@dataclass(frozen=True)
class StepInfo:
    """Where a training step stands; its generator makes any per-step randomness reproducible."""

    epoch: int
    step: int
    steps_per_epoch: int
    epochs: int
    seed: int

    @property
    def progress(self) -> float:
        """Epochs done, fractional (2.5 = half-way through the third epoch)."""
        return self.epoch + self.step / self.steps_per_epoch

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        seed = (self.seed * 1_000_003 + self.epoch * 100_003 + self.step * 7 + 11) % (2**63 - 1)
        return torch.Generator(device=device).manual_seed(seed)


class Objective(Protocol):
    """``objective(model, batch, step) -> (logits, {term name: scalar loss})``.

    The trainer sums the terms for the step and logs each one separately. An objective may also
    define ``prepare(trainer)`` (run once before the first epoch of a new run) and
    ``state_dict()`` / ``load_state_dict(state)`` (small JSON-able state kept in checkpoints).
    """

    def __call__(self, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class CrossEntropy:
    """Plain supervised training: L = CE(y, softmax(z)), computed in fp32 under autocast."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.images)
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing)
        return logits, {"ce": loss}

    def prepare(self, trainer: "Trainer") -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
