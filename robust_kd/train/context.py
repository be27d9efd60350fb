"""What the trainer hands its objective and training parts: the run's data and device, not itself."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data import BatchLoader, ImageDataset


@dataclass(frozen=True)
class TrainingContext:
    """The device, the data set and the training batches (shuffled and augmented as the steps see them)."""

    device: torch.device
    dataset: ImageDataset
    train_batches: BatchLoader

