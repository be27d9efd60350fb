"""The in-memory image data set every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import UserError


@dataclass(frozen=True)
class ImageDataset:
    """Train and test images held once, as uint8 tensors of shape N×C×H×W.

    ``mean``/``std`` are the per-channel statistics of the pixels in [0, 1]; models built for this
    data set take them as their first (normalization) layer. ``hflip`` says whether a horizontal
    flip keeps an image in its class (true for objects and clothes, false for digits).
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool = True
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images: torch.Tensor = getattr(self, f"{split}_images")
            labels: torch.Tensor = getattr(self, f"{split}_labels")
            where = f"{self.name} ({split} split, from {self.source or 'memory'})"
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise UserError(
                    f"{where}: images must be uint8 N×C×H×W, got {images.dtype} of shape "
                    f"{tuple(images.shape)}; check that the files are the format the loader expects"
                )
            if images.shape[1] not in (1, 3):
                raise UserError(
                    f"{where}: images have {images.shape[1]} channels, expected 1 (grey) or 3 (RGB)"
                )
            if min(images.shape[2:]) < 8:
                raise UserError(f"{where}: images of {tuple(images.shape[2:])} pixels are too small (at least 8×8)")
            if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
                raise UserError(
                    f"{where}: {images.shape[0]} images but {labels.shape[0]} labels; the data files are inconsistent"
                )
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(self.class_names)):
                raise UserError(
                    f"{where}: labels must lie in 0..{len(self.class_names) - 1}, found "
                    f"{int(labels.min())}..{int(labels.max())}"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise UserError(
                f"{self.name}: train images are {tuple(self.train_images.shape[1:])} but test images are "
                f"{tuple(self.test_images.shape[1:])}; both splits must share one shape"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise UserError(f"{self.name}: mean/std need one value per channel ({self.channels})")

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def size(self) -> int:
        """Image side in pixels (the height; loaders produce square images)."""
        return int(self.train_images.shape[2])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict[str, Any]:
        """Plain facts about the data set, for tables, JSON and checkpoint metadata."""
        return {
            "name": self.name,
            "source": self.source,
            "channels": self.channels,
            "size": self.size,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "train_size": int(self.train_images.shape[0]),
            "test_size": int(self.test_images.shape[0]),
            "mean": list(self.mean),
            "std": list(self.std),
            "hflip": self.hflip,
        }


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (computed in chunks)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for chunk in images.split(4096):
        x = chunk.to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.pow(2).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    std = (total_sq / max(count, 1) - mean.pow(2)).clamp_min(1e-12).sqrt()
    return tuple(round(float(m), 4) for m in mean), tuple(round(max(float(s), 1e-3), 4) for s in std)
