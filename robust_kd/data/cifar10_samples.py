"""``cifar10-samples``: 20 real CIFAR-10 test images shipped with the package (no download).

They are the 20 PNGs foolbox 3.3.4 ships as sample data (``foolbox/data/cifar10_<i>_<label>.png``,
MIT licence, © Jonas Rauber et al.; the images themselves are CIFAR-10 test images, Krizhevsky 2009),
copied byte for byte; a test checks them against the foolbox package. Enough to attack a pretrained
CIFAR-10 model (``autoattack_resnet18_cifar10``) with no data folder; evaluation only: the train
split is empty.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset
from .imagefile import read_image
from .registry import register_dataset

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def samples_folder() -> Path:
    return Path(str(resources.files("robust_kd.data") / "embedded" / "cifar10-foolbox"))


def read_samples(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N×3×32×32 uint8, labels) from files named <prefix>_<index>_<label>.png, in index order."""
    files = sorted(folder.glob("cifar10_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    images = np.stack([np.asarray(read_image(f, "RGB")).transpose(2, 0, 1) for f in files])
    labels = np.array([int(f.stem.split("_")[2]) for f in files], dtype=np.int64)
    return images.astype(np.uint8), labels


@register_dataset(
    "cifar10-samples",
    description="20 real CIFAR-10 test images shipped in the package (from foolbox's sample data); evaluation only",
    channels=3, size=32, num_classes=10,
    licence="MIT (foolbox sample data, © Jonas Rauber et al.); images from CIFAR-10 (Krizhevsky 2009)",
)
def cifar10_samples() -> ImageDataset:
    images, labels = read_samples(samples_folder())
    test_images, test_labels = torch.from_numpy(images), torch.from_numpy(labels)
    return ImageDataset(
        name="cifar10-samples",
        train_images=test_images[:0], train_labels=test_labels[:0],
        test_images=test_images, test_labels=test_labels,
        class_names=CLASSES, mean=CIFAR10_MEAN, std=CIFAR10_STD, hflip=True,
        source=str(samples_folder()),
    )
