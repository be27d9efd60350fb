"""Images in class folders: ``root/<class>/*.png`` or ``root/{train,test}/<class>/*.png``.

Images are resized once at load time (shorter side to ``size``, then a centre crop) and kept as
uint8, so training never touches a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..bounds import Range
from ..errors import UserError
from .dataset import ImageDataset, channel_stats
from .imagefile import is_grey, read_image
from .options import Option
from .registry import register_dataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
TEST_SPLIT_NAMES = ("test", "val", "valid", "validation")


def _class_folders(folder: Path) -> list[Path]:
    _listable(folder)
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """The image files under a class folder (at any depth); an unreadable folder is refused, not skipped."""
    _listable(folder)
    files = []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            _listable(path)
        elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            files.append(path)
    return files


def _listable(folder: Path) -> None:
    """pathlib skips a folder it may not list without a word: a class would load with no images."""
    try:
        with os.scandir(folder):
            pass
    except OSError as err:
        raise UserError(f"imagefolder: cannot list folder '{folder}' ({err.strerror or err}); make it readable "
                        "(chmod u+rx) or move it out of the data folder") from None


def _read_image(path: Path, size: int, mode: str) -> np.ndarray:
    from PIL import Image

    img = read_image(path, mode)
    scale = size / min(img.size)
    new_size = (max(size, round(img.size[0] * scale)), max(size, round(img.size[1] * scale)))
    img = img.resize(new_size, Image.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    array = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _detect_mode(files: list[Path]) -> str:
    return "L" if all(is_grey(path) for path in files[:50]) else "RGB"


def _load_split(folders: list[tuple[int, list[Path]]], size: int, mode: str) -> tuple[list[np.ndarray], list[int]]:
    """Read every image of each (label, image files of its class folder) pair."""
    images, labels = [], []
    for label, files in folders:
        for path in files:
            images.append(_read_image(path, size, mode))
            labels.append(label)
    return images, labels


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(members) * test_fraction))
        if len(members) > 1:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.extend(members[:n_test].tolist())
    test_mask = np.zeros(len(labels), dtype=bool)
    test_mask[test] = True
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


@register_dataset(
    "imagefolder",
    description="your images, one folder per class (optionally under train/ and test/), resized to --size",
    channels=None, size=None, num_classes=None, needs_root=True, licence="yours",
    options={
        "size": Option(int, Range(8, 512)),
        "grayscale": Option(bool, optional=True),
        "test_fraction": Option(float, Range(0, 1, low_open=True, high_open=True)),
        "seed": Option(int, Range(0, 2**32 - 1)),
    },
)
def imagefolder(root: Path, size: int = 32, grayscale: bool | None = None, test_fraction: float = 0.2,
                seed: int = 0) -> ImageDataset:
    if not root.is_dir():
        raise UserError(f"imagefolder: folder '{root}' does not exist; "
                        "pass --data-root <folder with one sub-folder per class>")
    test_dir = next((root / n for n in TEST_SPLIT_NAMES if (root / n).is_dir()), None)
    presplit = (root / "train").is_dir() and test_dir is not None
    train_root = root / "train" if presplit else root
    classes = {p.name: p for p in _class_folders(train_root)}
    if len(classes) < 2:
        raise UserError(
            f"imagefolder: '{train_root}' must hold one sub-folder per class (at least 2), found {len(classes)}"
        )
    per_class = {name: _image_files(folder) for name, folder in classes.items()}
    all_files = [f for files in per_class.values() for f in files]
    if not all_files:
        raise UserError(f"imagefolder: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under '{train_root}'")
    empty = [name for name, files in per_class.items() if not files]
    if empty:
        raise UserError(f"imagefolder: class folder '{classes[empty[0]]}' holds no images "
                        f"({len(empty)} of {len(classes)} classes have none); add images or remove the folder")
    mode = _detect_mode(all_files) if grayscale is None else ("L" if grayscale else "RGB")

    train_x, train_y = _load_split(list(enumerate(per_class.values())), size, mode)
    if presplit:
        assert test_dir is not None
        extra = sorted(set(p.name for p in _class_folders(test_dir)) - set(classes))
        if extra:
            raise UserError(f"imagefolder: '{test_dir}' has classes missing from train/: {', '.join(extra)}")
        # labels follow the train class order, even where a class has no test images
        test_folders = [(label, _image_files(test_dir / name)) for label, name in enumerate(classes)
                        if (test_dir / name).is_dir()]
        test_x, test_y = _load_split(test_folders, size, mode)
    else:
        labels = np.asarray(train_y)
        train_idx, test_idx = _stratified_split(labels, float(test_fraction), int(seed))
        test_x, test_y = [train_x[i] for i in test_idx], labels[test_idx].tolist()
        train_x, train_y = [train_x[i] for i in train_idx], labels[train_idx].tolist()
    if not test_x:
        raise UserError(f"imagefolder: no test images under '{root}'; add some or use more images per class")
    train_images = torch.from_numpy(np.stack(train_x))
    mean, std = channel_stats(train_images)
    return ImageDataset(
        name="imagefolder",
        train_images=train_images,
        train_labels=torch.tensor(train_y, dtype=torch.int64),
        test_images=torch.from_numpy(np.stack(test_x)),
        test_labels=torch.tensor(test_y, dtype=torch.int64),
        class_names=tuple(classes),
        mean=mean,
        std=std,
        hflip=True,
        source=str(root),
    )
