"""The idx file format of MNIST and Fashion-MNIST, and the data sets stored in it.

An idx file is a big-endian header (two zero bytes, a type code, the number of dimensions, then
one uint32 per dimension) followed by the raw array. Files may be gzip-compressed.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import atomic_open
from .dataset import ImageDataset
from .registry import register_dataset

_UBYTE = 0x08
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an (optionally gzipped) unsigned-byte idx file into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:   # zlib.error: a damaged .gz stream
        raise UserError(f"cannot read idx file '{path}': {err}; replace it with an intact copy") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _UBYTE:
        raise UserError(f"'{path}' is not an unsigned-byte idx file (bad header); replace it with an intact copy")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"'{path}' is truncated (header cut short); replace it with an intact copy")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape)) if ndim else 0
    if len(data) - header != expected:
        raise UserError(
            f"'{path}' holds {len(data) - header} bytes of data but its header announces {expected}; "
            "the file is truncated or corrupt, replace it with an intact copy"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file (gzipped when the name ends in .gz), atomically."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = bytes([0, 0, _UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    with atomic_open(path, "wb") as raw:
        if path.suffix == ".gz":
            # mtime=0 keeps the bytes reproducible for the same array.
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz:
                gz.write(payload)
        else:
            raw.write(payload)


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _resolve_folder(root: Path, torchvision_name: str) -> Path:
    """Accept the folder holding the idx files or torchvision's ``<root>/<Name>/raw`` layout."""
    for folder in (root, root / torchvision_name / "raw", root / "raw"):
        if find_idx_file(folder, SPLIT_FILES["train"][0]) is not None:
            return folder
    return root


def load_idx_dataset(
    name: str,
    root: Path,
    class_names: tuple[str, ...],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    hflip: bool,
    how_to_get: str,
    torchvision_name: str = "",
) -> ImageDataset:
    if not root.is_dir():
        raise UserError(f"{name}: data folder '{root}' does not exist; {how_to_get}")
    folder = _resolve_folder(root, torchvision_name)
    arrays = {}
    for split, stems in SPLIT_FILES.items():
        for kind, stem in zip(("images", "labels"), stems):
            path = find_idx_file(folder, stem)
            if path is None:
                raise UserError(f"{name}: missing '{folder / stem}.gz' (or without .gz); {how_to_get}")
            arrays[split, kind] = read_idx(path)
    tensors = {}
    for split in SPLIT_FILES:
        images, labels = arrays[split, "images"], arrays[split, "labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise UserError(
                f"{name}: {split} files have shapes {images.shape} and {labels.shape}, "
                "expected N×H×W images and N labels"
            )
        tensors[split] = (torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    return ImageDataset(
        name=name,
        train_images=tensors["train"][0],
        train_labels=tensors["train"][1],
        test_images=tensors["test"][0],
        test_labels=tensors["test"][1],
        class_names=class_names,
        mean=mean,
        std=std,
        hflip=hflip,
        source=str(folder),
    )


@register_dataset(
    "fashion-mnist",
    description="Fashion-MNIST, 60k/10k grey 28×28 images of 10 clothing classes (idx files)",
    channels=1, size=28, num_classes=10,
    default_root=DEBIAN_FASHION_MNIST,
    licence="MIT, © Zalando SE",
)
def fashion_mnist(root: Path) -> ImageDataset:
    return load_idx_dataset(
        "fashion-mnist", root, FASHION_CLASSES, (0.2860,), (0.3530,), hflip=True,
        how_to_get="install Debian's 'dataset-fashion-mnist' (apt-get install dataset-fashion-mnist) "
        "or pass --data-root <folder with the four idx files>",
        torchvision_name="FashionMNIST",
    )


@register_dataset(
    "mnist",
    description="MNIST, 60k/10k grey 28×28 handwritten digits (idx files from --data-root)",
    channels=1, size=28, num_classes=10,
    needs_root=True,
    licence="CC BY-SA 3.0, Y. LeCun and C. Cortes",
)
def mnist(root: Path) -> ImageDataset:
    return load_idx_dataset(
        "mnist", root, DIGIT_CLASSES, (0.1307,), (0.3081,), hflip=False,
        how_to_get="put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
        "and t10k-labels-idx1-ubyte.gz (from the MNIST site) in that folder",
        torchvision_name="MNIST",
    )


EMBEDDED_FOLDER = "fashion-mnist-mini"


def embedded_root() -> Path:
    return Path(str(resources.files("robust_kd.data") / "embedded" / EMBEDDED_FOLDER))


@register_dataset(
    "embedded",
    description="the default: a stratified 8,000/2,000 subset of Fashion-MNIST shipped inside robust-kd",
    channels=1, size=28, num_classes=10,
    licence="MIT, © Zalando SE (see robust_kd/data/embedded/fashion-mnist-mini/README.md)",
)
def embedded() -> ImageDataset:
    return load_idx_dataset(
        "embedded", embedded_root(), FASHION_CLASSES, (0.2860,), (0.3530,), hflip=True,
        how_to_get="the package installation is incomplete; reinstall robust-kd",
    )
