"""The stimuli of ``robust-kd rsa``, ``rsa-adversarial`` and ``rsa-models``: the embedded 92 images, a
folder of images, a ``.npy`` array, or the first images of a model's test split, fitted to the model.

What is refused, in one line: no images, fewer than 3 (an RDM needs 3), an array of the wrong rank,
channels or dtype, NaN/inf pixels, float pixels outside [0, 1], and image files the reader refuses
(:mod:`robust_kd.data.imagefile`: pixel limit, modes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import neuro

from .errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
MIN_STIMULI = 3                     # an RDM needs 3 conditions
FULL_SCALE = {"u1": 255.0, "u2": 65535.0, "b1": 1.0}     # integer pixels: 8- and 16-bit, and booleans
ARRAY_FORMS = "uint8 (0..255), uint16 (0..65535), bool, or float in [0, 1]"


@dataclass
class Stimuli:
    images: torch.Tensor            # N × C × H × W in [0, 1], at the model's input size and channels
    names: list[str]
    source: str
    original_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)     # one-line warnings for the user (e.g. fewer than --n)


def stimulus_array(array: np.ndarray, source: str) -> torch.Tensor:
    """N×H×W, N×H×W×C or N×C×H×W pixels (C = 1, 3 or 4; alpha dropped) as N×C×H×W floats in [0, 1]."""
    a = np.asarray(array)
    kind = f"{a.dtype.kind}{a.dtype.itemsize}"
    if kind not in FULL_SCALE and a.dtype.kind != "f":
        raise UserError(f"{source}: pixels of dtype {a.dtype} are not read; save them as {ARRAY_FORMS}")
    if a.ndim == 3:                                        # N × H × W grey
        a = a[:, None]
    if a.ndim != 4:
        raise UserError(f"{source}: stimuli must be N×H×W, N×H×W×C or N×C×H×W images, got an array of shape "
                        f"{np.shape(array)}")
    if a.size == 0:
        raise UserError(f"{source}: the array holds no pixels (shape {np.shape(array)}); give at least "
                        f"{MIN_STIMULI} images")
    if a.shape[-1] in (1, 3, 4) and a.shape[1] not in (1, 3, 4):
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3, 4):
        raise UserError(f"{source}: images need 1, 3 or 4 channels (first or last), got shape {np.shape(array)}")
    a = a[:, :3]                                           # drop alpha
    if kind in FULL_SCALE:
        return torch.from_numpy(a.astype(np.float32) / np.float32(FULL_SCALE[kind]))
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(t).all():
        raise UserError(f"{source}: the stimuli hold NaN/inf values; fix the array")
    if t.min() < 0 or t.max() > 1:
        raise UserError(f"{source}: float stimuli must lie in [0, 1] (found {float(t.min()):.3g}.."
                        f"{float(t.max()):.3g}); scale them or save them as uint8")
    return t


def fit_to_model(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Channels (RGB → luminance, grey → RGB) and antialiased resize to the model's input."""
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.repeat(1, 3, 1, 1)
    elif x.shape[1] != channels:
        raise UserError(f"the model takes {channels}-channel images, the stimuli have {x.shape[1]}")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x.contiguous()


def _folder_images(path: Path) -> tuple[torch.Tensor, list[str]]:
    """The images of a folder, sorted by name, as RGB (a greyscale model takes their luminance)."""
    from PIL import Image

    from .data.imagefile import read_image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder '{path}'")
    arrays = [np.asarray(read_image(f, "RGB")) for f in files]
    if len({a.shape for a in arrays}) > 1:
        side = max(a.shape[0] for a in arrays)
        arrays = [np.asarray(Image.fromarray(a).resize((side, side))) for a in arrays]
    return stimulus_array(np.stack(arrays), f"folder '{path}'"), [f.stem for f in files]


def _array_images(path: Path) -> tuple[torch.Tensor, list[str]]:
    """A .npy array; names from a ``<file>.txt`` beside it (one per line), else the row index."""
    if not path.is_file():
        raise UserError(f"stimuli file '{path}' does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001  numpy raises ValueError, EOFError, OSError... for damaged files
        raise UserError(f"'{path}' is not a readable numeric .npy array (damaged, or an object array, "
                        "which is refused)") from None
    x = stimulus_array(array, f"'{path}'")
    names_file = path.with_suffix(".txt")
    try:
        names = (names_file.read_text(encoding="utf-8-sig").split() if names_file.is_file()
                 else [f"{i:04d}" for i in range(len(x))])
    except (OSError, UnicodeDecodeError):
        raise UserError(f"{names_file} is not readable text; give one stimulus name per line") from None
    if len(names) != len(x):
        raise UserError(f"{names_file} has {len(names)} names for {len(x)} images; give one per line")
    return x, names


def load_stimuli(spec: str, channels: int, size: int) -> Stimuli:
    """'rsa92' (the embedded 92 images), a folder of images (sorted by name), or a ``.npy`` array
    (names from a ``<file>.txt`` beside it, one per line, else the row index)."""
    path = Path(spec)
    if spec == "rsa92":
        data = neuro.datasets.load_rsa92()
        x, names = stimulus_array(data.images, "rsa92"), [str(c) for c in data.conditions]
        source = "rsa92: the 92 object images of Kriegeskorte et al. 2008 (embedded)"
    elif path.is_dir():
        (x, names), source = _folder_images(path), f"folder {path}"
    elif path.suffix == ".npy":
        (x, names), source = _array_images(path), f"array {path}"
    else:
        raise UserError(f"--stimuli '{spec}': give 'rsa92', a folder of images or a .npy array")
    if len(x) < MIN_STIMULI:
        raise UserError(f"--stimuli '{spec}': {len(x)} images; an RDM needs at least {MIN_STIMULI}")
    if len(set(names)) != len(names):
        raise UserError("stimulus names must be unique (they are matched with the brain data's conditions)")
    original = tuple(x.shape[-2:])
    return Stimuli(fit_to_model(x, channels, size), names, source, original)  # type: ignore[arg-type]


def test_split_stimuli(target_data: str | None, data_root: str | None, options: dict, n: int, channels: int,
                       size: int) -> Stimuli:
    """The first ``n`` test images of a data set (the models' own, with the folder of their stored
    config), as stimuli named by index and class; a note says so when the split has fewer."""
    from .data import load_dataset
    from .data.registry import stored_root

    if n < MIN_STIMULI:
        raise UserError(f"--n must be at least {MIN_STIMULI} (an RDM needs {MIN_STIMULI} stimuli)")
    name = target_data or "embedded"
    dataset = load_dataset(name, stored_root(name, data_root), **options)
    have = len(dataset.test_labels)
    notes = [f"--n {n}: {dataset.name} has {have} test points; using all {have}"] if n > have else []
    n = min(n, have)
    if n < MIN_STIMULI:
        raise UserError(f"{dataset.name} has {have} test images; an RDM needs at least {MIN_STIMULI}")
    images = dataset.test_images[:n].float() / 255.0
    names = [f"{i:04d}_{dataset.class_names[int(c)]}" for i, c in enumerate(dataset.test_labels[:n])]
    return Stimuli(fit_to_model(images, channels, size), names, f"test split of {dataset.name} (first {n})",
                   tuple(images.shape[-2:]), notes)  # type: ignore[arg-type]
