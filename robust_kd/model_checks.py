"""The checks every model a verb loads goes through, whatever loads it (a checkpoint for attack,
transfer, the RSA verbs, a distillation teacher, a JPEG table initialisation, a resumed training, the
report's table reader; a pretrained model): its metadata is of the types and in the ranges the model
needs, and its weights are finite numbers.

A checkpoint whose weights hold NaN loads and runs: an attack's probe pass catches its NaN logits, but
a transfer matrix made on it reads "0.0% success", a teacher teaches nothing and an RSA compares
NaN activations. So the weights are checked where they are read, once, for every verb.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import UserError

MAX_CLASSES = 100_000           # beyond any image data set; a larger head is a corrupt or hostile file
MAX_IMAGE_SIZE = 4096
TABLE_SIDE = 8                  # JPEG quantization tables are 8×8


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _count(metadata: Mapping[str, Any], key: str, low: int, high: int) -> str | None:
    value = metadata[key]
    if not _is_int(value) or not low <= int(value) <= high:
        return f"'{key}' is {value!r}, not a whole number from {low} to {high}"
    return None


def _normalization(metadata: Mapping[str, Any]) -> str | None:
    """Per-channel mean and std of pixels in [0, 1]: a mean outside [0, 1] means the model was made for
    other pixel values (0-255, say), which no verb feeds it."""
    normalization = metadata["normalization"]
    if not isinstance(normalization, Mapping):
        return f"'normalization' is {type(normalization).__name__}, not a mapping of mean and std"
    channels = int(metadata["in_channels"])
    for key in ("mean", "std"):
        values = normalization.get(key)
        if not isinstance(values, list) or len(values) != channels or not all(map(_is_number, values)):
            return f"'normalization.{key}' is {values!r}, not {channels} finite number(s), one per channel"
    if not all(0 <= float(v) <= 1 for v in normalization["mean"]):
        return (f"'normalization.mean' is {normalization['mean']}, outside [0, 1]: the model expects pixel values "
                "other than the [0, 1] every robust-kd verb gives")
    if not all(float(v) > 0 for v in normalization["std"]):
        return f"'normalization.std' is {normalization['std']}, not all positive"
    return None


def _class_names(metadata: Mapping[str, Any]) -> str | None:
    dataset = metadata.get("dataset")
    if dataset is None:
        return None
    if not isinstance(dataset, Mapping):
        return f"'dataset' is {type(dataset).__name__}, not a mapping"
    names = dataset.get("class_names")
    if names is not None and (not isinstance(names, list) or len(names) != int(metadata["num_classes"])
                              or not all(isinstance(n, str) for n in names)):
        return f"'dataset.class_names' is not a list of {metadata['num_classes']} names"
    return None


def _jpeg_tables(metadata: Mapping[str, Any]) -> str | None:
    tables = metadata.get("jpeg_tables")
    if tables is None:
        return None
    if not isinstance(tables, Mapping):
        return "'jpeg_tables' is not a mapping of tables"
    for name, table in tables.items():
        rows = table if isinstance(table, list) and len(table) == TABLE_SIDE else []
        if not rows or not all(isinstance(r, list) and len(r) == TABLE_SIDE and all(_is_number(v) and v > 0 for v in r)
                               for r in rows):
            return f"'jpeg_tables.{name}' is not an 8×8 table of positive finite numbers"
    return None


def metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """What is wrong with a checkpoint's metadata (its required keys present), in words, or None."""
    if not isinstance(metadata["arch"], str) or not metadata["arch"]:
        return f"'arch' is {metadata['arch']!r}, not a model name"
    for problem in (_count(metadata, "num_classes", 2, MAX_CLASSES), _count(metadata, "in_channels", 1, 3),
                    _count(metadata, "image_size", 8, MAX_IMAGE_SIZE)):
        if problem:
            return problem
    options = metadata.get("input_layer_options")
    if options is not None and not isinstance(options, Mapping):
        return f"'input_layer_options' is {type(options).__name__}, not a mapping"
    return _normalization(metadata) or _class_names(metadata) or _jpeg_tables(metadata)


def check_metadata(path: str | Path, metadata: Mapping[str, Any]) -> None:
    problem = metadata_problem(metadata)
    if problem:
        raise UserError(f"'{path}': its metadata is damaged ({problem}); the file is corrupt or was edited: "
                        "use the checkpoint of a robust-kd run folder, or train again")


def nonfinite_tensor(state: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first floating-point tensor of a state dict holding NaN or inf: (its name, "NaN" or "inf")."""
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return name, "NaN" if bool(torch.isnan(value).any()) else "inf"
    return None


def check_weights(where: str, state: Mapping[str, Any]) -> None:
    """Refuse weights that hold NaN or inf (a training that diverged, a damaged file): a model made of
    them gives NaN logits, which every verb would turn into numbers that mean nothing."""
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise UserError(f"{where}: the weights hold {bad[1]} (first in '{bad[0]}'), so the model's outputs mean "
                        "nothing; use an earlier checkpoint (e.g. checkpoints/best.pt) or train again")
