"""What the trainer hands its objective and training parts: the run's data and device, not itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_model
from ..data import BatchLoader, ImageDataset


@dataclass(frozen=True)
class TrainingContext:
    """The device, the data set and the training batches (shuffled and augmented as the steps see them)."""

    device: torch.device
    dataset: ImageDataset
    train_batches: BatchLoader

    def load_model(self, path: str | Path) -> nn.Module:
        """The model of a checkpoint (e.g. a pretrained one a part starts from), on this run's device, in eval mode."""
        return load_model(path, self.device)
