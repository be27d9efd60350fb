"""What a checkpoint's metadata must hold, checked as strictly as its weights before a model is built.

A checkpoint is a file a user may have edited, damaged or been sent: ``num_classes: 'many'`` must
end in one line naming the file and the field, not in a ValueError deep in a model builder, and
``num_classes: 100000000`` must not try to allocate a 400 GB head. Each field has one check; a check
returns what is wrong in words, or None.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from .bounds import shown
from .models.registry import MAX_NUM_CLASSES, MIN_IMAGE_SIZE, input_layer_keywords, list_models

# twice the largest images a data set here makes (imagefolder's 512): rsa resizes its stimuli to this side
MAX_IMAGE_SIZE = 1024
MAX_EPOCH = 1_000_000

Check = Callable[[Any, Mapping[str, Any]], "str | None"]     # (value, the whole metadata) -> problem or None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, high: int) -> Check:
    def check(value: Any, _: Mapping[str, Any]) -> str | None:
        ok = _is_int(value) and low <= value <= high
        return None if ok else f"must be an integer from {low:,} to {high:,}"
    return check


def _arch(value: Any, _: Mapping[str, Any]) -> str | None:
    if isinstance(value, str) and value in list_models():
        return None
    return "must name an architecture of this robust-kd (robust-kd models lists them)"


def _in_channels(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if _is_int(value) and value in (1, 3) else "must be 1 (grey) or 3 (RGB)"


def _per_channel(value: Any, channels: int, positive: bool) -> bool:
    return (isinstance(value, list) and len(value) == channels and all(_is_number(v) for v in value)
            and (not positive or all(v > 0 for v in value)))


def _normalization(value: Any, metadata: Mapping[str, Any]) -> str | None:
    channels = metadata.get("in_channels")
    if not (isinstance(value, dict) and _per_channel(value.get("mean"), channels, False)
            and _per_channel(value.get("std"), channels, True)):
        return f"must be {{mean: [...], std: [...]}} with {channels} finite number(s) each, std positive"
    if not all(0 <= v <= 1 for v in value["mean"]):
        # a mean outside [0, 1] means a model made for other pixel values (0-255, say), which no verb feeds it
        return "has a mean outside [0, 1]: the model expects pixel values other than the [0, 1] robust-kd gives"
    return None


def _input_layer_options(value: Any, metadata: Mapping[str, Any]) -> str | None:
    if value is None:
        return None
    known = input_layer_keywords(metadata["arch"])
    if (isinstance(value, dict) and all(key in known for key in value)
            and all(_is_number(v) for v in value.values())):
        return None
    return f"must map the input layer's options ({', '.join(known) or 'none'}) to numbers"


def _jpeg_tables(value: Any, _: Mapping[str, Any]) -> str | None:
    def table(t: Any) -> bool:
        return isinstance(t, list) and len(t) == 8 and all(
            isinstance(row, list) and len(row) == 8 and all(_is_number(v) and v > 0 for v in row) for row in t)
    ok = isinstance(value, dict) and set(value) <= {"luma", "chroma"} and all(table(t) for t in value.values())
    return None if ok else "must map luma (and chroma) to 8×8 tables of positive finite numbers"


def _dataset(value: Any, metadata: Mapping[str, Any]) -> str | None:
    if not isinstance(value, dict):
        return "must be a mapping"
    names = value.get("class_names")
    if names is None or (isinstance(names, list) and len(names) == metadata["num_classes"]
                         and all(isinstance(n, str) for n in names)):
        return None
    return f"must hold class_names as a list of {metadata['num_classes']} names"


def _mapping(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, dict) else "must be a mapping"


def _accuracy(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if value is None or (_is_number(value) and 0 <= value <= 1) else "must be a fraction in [0, 1]"


# in this order: the later checks rely on the earlier fields (normalization on in_channels)
REQUIRED: dict[str, Check] = {
    "arch": _arch,
    "num_classes": integer(2, MAX_NUM_CLASSES),
    "in_channels": _in_channels,
    "image_size": integer(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "normalization": _normalization,
}
OPTIONAL: dict[str, Check] = {
    "input_layer_options": _input_layer_options,
    "jpeg_tables": _jpeg_tables,
    "dataset": _dataset,
    "recipe": _mapping,
    "versions": _mapping,
    "epoch": integer(0, MAX_EPOCH),
    "test_accuracy": _accuracy,
}


def metadata_problem(metadata: Any) -> str | None:
    """What is wrong with a checkpoint's metadata, in words (naming the field), or None."""
    if not isinstance(metadata, dict):
        return "its metadata is not a mapping"
    missing = [key for key in REQUIRED if key not in metadata]
    if missing:
        return f"its metadata lacks {', '.join(missing)}"
    for key, check in [*REQUIRED.items(), *OPTIONAL.items()]:
        if key in metadata:
            problem = check(metadata[key], metadata)
            if problem is not None:
                return f"its metadata field '{key}' {problem}, got {shown(metadata[key])}"
    return None
