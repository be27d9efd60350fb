"""What the trainer minimises. Distillation methods plug in here as other objectives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batch
from .context import TrainingContext


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


class Objective:
    """What the trainer minimises: ``objective(model, batch, step) -> (logits, {term name: scalar loss})``.

    The trainer sums the terms for the step and logs each one separately. Subclasses implement
    :meth:`__call__`; the other hooks do nothing here, so the trainer calls them all unconditionally.
    """

    def __call__(self, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def bind(self, context: TrainingContext) -> None:
        """Called when the trainer is built, for a new run and a resumed one alike."""

    def prepare(self, context: TrainingContext) -> None:
        """Called once before the first epoch of a new run (a resume restores :meth:`state_dict` instead)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Numbers recorded with every epoch (and repeated in the summary)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Small JSON-able state from :meth:`prepare`, kept in checkpoints so that a resume skips it."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class CrossEntropy(Objective):
    """Plain supervised training: L = CE(y, softmax(z)), computed in fp32 under autocast."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, batch: Batch, step: StepInfo) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch.images)
        loss = F.cross_entropy(logits.float(), batch.labels, label_smoothing=self.label_smoothing)
        return logits, {"ce": loss}
