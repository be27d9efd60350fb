"""Clean accuracy and loss of a model over a batch loader."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             prefix: str = "") -> dict[str, float]:
    """``{prefix}accuracy`` and ``{prefix}loss`` (mean cross-entropy); restores the model's mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long)
    loss_sum = torch.zeros((), dtype=torch.float64)
    seen = 0
    for images, labels in batches:
        logits = model(images).float()
        correct = correct.to(logits.device) + (logits.argmax(dim=1) == labels).sum()
        loss_sum = loss_sum.to(logits.device) + F.cross_entropy(logits, labels, reduction="sum").double()
        seen += labels.shape[0]
    model.train(was_training)
    return {f"{prefix}accuracy": int(correct) / max(seen, 1), f"{prefix}loss": float(loss_sum) / max(seen, 1)}
