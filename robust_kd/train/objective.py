"""What the trainer minimises. Distillation methods plug in here as other objectives."""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn


class Objective(Protocol):
    """``objective(model, images, labels) -> (logits, {term name: scalar loss})``.

    The trainer sums the terms for the step and logs each one separately.
    """

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


class CrossEntropy:
    """Plain supervised training: L = CE(y, softmax(z)), computed in fp32 under autocast."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        return logits, {"ce": loss}
