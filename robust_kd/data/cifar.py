"""CIFAR-10 and CIFAR-100 in their standard "python version" format.

The files are Python pickles of dicts holding numpy arrays. We never unpickle arbitrary objects:
a restricted unpickler admits only the few numpy constructors such files need, so a hostile file
fails to load instead of running code.
"""

from __future__ import annotations

import io
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .dataset import ImageDataset
from .registry import register_dataset


def _numpy_constructors() -> dict[tuple[str, str], Any]:
    reconstruct, _, _ = np.ndarray.__reduce__(np.zeros(1))
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = reconstruct
    try:  # protocol-5 pickles of numpy arrays go through _frombuffer
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core.numeric import _frombuffer  # type: ignore[attr-defined,no-redef]
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[module, "_frombuffer"] = _frombuffer
    import _codecs

    allowed["_codecs", "encode"] = _codecs.encode  # bytes written by Python 3 at protocol 2
    return allowed


class _ArrayOnlyUnpickler(pickle.Unpickler):
    _allowed = _numpy_constructors()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not a plain CIFAR batch") from None


def read_cifar_batch(path: Path) -> dict[str, Any]:
    """Read one CIFAR pickle into a dict with str keys (bytes keys of Python-2 files decoded)."""
    try:
        with open(path, "rb") as f:
            raw = _ArrayOnlyUnpickler(io.BufferedReader(f), encoding="latin1").load()
    except OSError as err:
        raise UserError(f"cannot read '{path}': {err}") from None
    except Exception as err:  # any unpickling failure means a corrupt or foreign file
        raise UserError(
            f"'{path}' is not a CIFAR python batch ({err}); replace it with the file from cifar-*-python.tar.gz"
        ) from None
    if not isinstance(raw, dict):
        raise UserError(f"'{path}' is not a CIFAR python batch (holds a {type(raw).__name__}, expected a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in raw.items()}


def _names(values: Any) -> tuple[str, ...]:
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


@dataclass(frozen=True)
class _CifarLayout:
    """File names and keys of one CIFAR variant."""

    name: str
    folder: str  # the folder the archive extracts to (torchvision's layout puts it under root)
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    num_classes: int
    archive: str
    torchvision_class: str

    def how_to_get(self) -> str:
        return (
            f"download {self.archive} from https://www.cs.toronto.edu/~kriz/cifar.html and extract it into "
            "the folder (robust-kd train can also fetch it with --download on a machine with network access)"
        )

    def resolve(self, root: Path) -> Path:
        """The folder holding the batch files: ``root`` itself or torchvision's ``root/<folder>``."""
        for folder in (root, root / self.folder):
            if (folder / self.test).is_file():
                return folder
        if not root.is_dir():
            raise UserError(f"{self.name}: data folder '{root}' does not exist; {self.how_to_get()}")
        raise UserError(f"{self.name}: missing '{root / self.folder / self.test}'; {self.how_to_get()}")

    def read_split(self, folder: Path, files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for file in files:
            path = folder / file
            if not path.is_file():
                raise UserError(f"{self.name}: missing '{path}'; {self.how_to_get()}")
            batch = read_cifar_batch(path)
            if "data" not in batch or self.label_key not in batch:
                raise UserError(f"{self.name}: '{path}' lacks the 'data' or '{self.label_key}' entry; "
                                "the file is corrupt")
            data = np.asarray(batch["data"])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise UserError(
                    f"{self.name}: '{path}' holds data of shape {data.shape} ({data.dtype}), expected N×3072 uint8"
                )
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
            labels.append(torch.as_tensor(np.asarray(batch[self.label_key], dtype=np.int64)))
        return torch.cat(images), torch.cat(labels)

    def load(self, root: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> ImageDataset:
        folder = self.resolve(root)
        meta_path = folder / self.meta
        if not meta_path.is_file():
            raise UserError(f"{self.name}: missing '{meta_path}'; {self.how_to_get()}")
        meta = read_cifar_batch(meta_path)
        if self.names_key not in meta:
            raise UserError(f"{self.name}: '{meta_path}' lacks '{self.names_key}'; the file is corrupt")
        class_names = _names(meta[self.names_key])
        if len(class_names) != self.num_classes:
            raise UserError(
                f"{self.name}: '{meta_path}' names {len(class_names)} classes, expected {self.num_classes}"
            )
        train_images, train_labels = self.read_split(folder, self.train)
        test_images, test_labels = self.read_split(folder, (self.test,))
        return ImageDataset(
            name=self.name, train_images=train_images, train_labels=train_labels,
            test_images=test_images, test_labels=test_labels, class_names=class_names,
            mean=mean, std=std, hflip=True, source=str(folder),
        )

    def download(self, root: Path) -> None:
        """Fetch through torchvision; fails quickly, with one line, when there is no network."""
        import torchvision.datasets as tvd

        root.mkdir(parents=True, exist_ok=True)
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20.0)
        try:
            getattr(tvd, self.torchvision_class)(str(root), train=True, download=True)
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(
                f"{self.name}: download failed ({reason}); without network access, "
                f"download {self.archive} elsewhere and extract it into '{root}'"
            ) from None
        finally:
            socket.setdefaulttimeout(previous)


CIFAR10 = _CifarLayout(
    "cifar10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
    "batches.meta", "labels", "label_names", 10, "cifar-10-python.tar.gz", "CIFAR10",
)
CIFAR100 = _CifarLayout(
    "cifar100", "cifar-100-python", ("train",), "test", "meta", "fine_labels", "fine_label_names", 100,
    "cifar-100-python.tar.gz", "CIFAR100",
)


def _load(layout: _CifarLayout, root: Path, download: bool, mean: tuple[float, ...],
          std: tuple[float, ...]) -> ImageDataset:
    if download:
        try:
            layout.resolve(root)
        except UserError:
            layout.download(root)
    return layout.load(root, mean, std)


@register_dataset(
    "cifar10",
    description="CIFAR-10, 50k/10k RGB 32×32 images of 10 classes (python-pickle batches from --data-root)",
    channels=3, size=32, num_classes=10, needs_root=True, licence="see https://www.cs.toronto.edu/~kriz/cifar.html",
)
def cifar10(root: Path, download: bool = False) -> ImageDataset:
    return _load(CIFAR10, root, download, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_dataset(
    "cifar100",
    description="CIFAR-100, 50k/10k RGB 32×32 images of 100 classes (python-pickle files from --data-root)",
    channels=3, size=32, num_classes=100, needs_root=True, licence="see https://www.cs.toronto.edu/~kriz/cifar.html",
)
def cifar100(root: Path, download: bool = False) -> ImageDataset:
    return _load(CIFAR100, root, download, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
