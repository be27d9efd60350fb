"""A small learnable data set made from a seed, for tests and demos.

Each class has a smooth random prototype image; samples are the prototype under a random shift
plus noise, so a network can learn it in a few steps and augmentation behaves as on real images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..bounds import Range
from ..errors import UserError
from .dataset import ImageDataset
from .options import Option
from .registry import register_dataset


def _make_split(prototypes: torch.Tensor, n: int, noise: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    num_classes, _, size, _ = prototypes.shape
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=generator)]
    shifts = torch.randint(-2, 3, (n, 2), generator=generator)
    images = prototypes[labels]
    padded = F.pad(images, (2, 2, 2, 2), mode="replicate")
    rows = (torch.arange(size)[None, :] + 2 + shifts[:, :1])
    cols = (torch.arange(size)[None, :] + 2 + shifts[:, 1:])
    images = padded[torch.arange(n)[:, None, None, None], torch.arange(images.shape[1])[None, :, None, None],
                    rows[:, None, :, None], cols[:, None, None, :]]
    images = images + noise * torch.randn(images.shape, generator=generator)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), labels


# what this generator makes at most: (train + test)·channels·size² pixel values, e.g. 16,000 RGB images of
# 32×32; while it works it holds a few float32 copies of them (about 1 GB at the limit)
MAX_VALUES = 50_000_000


@register_dataset(
    "synthetic",
    description="generated class prototypes with noise "
                "(for tests and demos; options: channels, size, classes, train, test, noise, seed)",
    channels=None, size=None, num_classes=None, licence="generated",
    options={
        "channels": Option(int, choices=(1, 3)),
        "size": Option(int, Range(8, 256)),
        "classes": Option(int, Range(2, 1000)),
        "train": Option(int, Range(2, 1_000_000)),
        "test": Option(int, Range(1, 1_000_000)),
        "noise": Option(float, Range(0, 5)),     # the std of the noise on [0, 1] pixels; above 1 it is all noise
        "seed": Option(int, Range(0, 2**32 - 1)),
    },
)
def synthetic(channels: int = 3, size: int = 32, classes: int = 4, train: int = 256, test: int = 64,
              noise: float = 0.15, seed: int = 0) -> ImageDataset:
    if train < classes:
        raise UserError(f"synthetic: train ({train}) must be at least classes ({classes}): one image per class")
    values = (train + test) * channels * size * size
    if values > MAX_VALUES:
        raise UserError(f"synthetic: {train} + {test} images of {channels}×{size}×{size} are {values:,} pixel values, "
                        f"more than the {MAX_VALUES:,} this generator makes; lower train, test or size")
    generator = torch.Generator().manual_seed(int(seed))
    coarse = torch.rand((int(classes), int(channels), 4, 4), generator=generator)
    prototypes = F.interpolate(coarse, size=(int(size), int(size)), mode="bilinear", align_corners=False)
    train_images, train_labels = _make_split(prototypes, int(train), float(noise), generator)
    test_images, test_labels = _make_split(prototypes, int(test), float(noise), generator)
    return ImageDataset(
        name="synthetic",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=tuple(f"class{c}" for c in range(int(classes))),
        mean=(0.5,) * int(channels),
        std=(0.25,) * int(channels),
        hflip=True,
        source=f"generated (seed {seed})",
    )
