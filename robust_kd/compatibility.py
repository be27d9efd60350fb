"""What a classifier takes and gives, and one check that two of them agree: a model and the data it is
attacked on (attack, transfer), the sources and targets of a transfer matrix, a surrogate and the model
it stands in for (rsa-adversarial --black transfer).

Examples made on a model of other classes are judged against labels the other model does not have (an
IndexError deep in a loss, or a success rate that means nothing); images of another shape or pixel range
reach it resized or wrong. So every pair is compared here before any work starts: the number of classes,
their names where both sides know them, the image channels and size, and the pixel range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import UserError

PIXELS = (0.0, 1.0)     # what every robust-kd model takes (it owns its normalization) and every verb gives


@dataclass(frozen=True)
class Interface:
    label: str                                  # how a message names it: "resnet8", "source 'a'", "embedded"
    classes: int
    channels: int
    size: int | None = None                     # the images' side length; None: any
    class_names: tuple[str, ...] | None = None  # None: not known (a checkpoint without data set metadata)
    value_range: tuple[float, float] = PIXELS
    verb: str = "takes"                         # a model "takes" images, a data set "has" them


def of_model(label: str, model: Any) -> Interface:
    """A model's interface from its attributes and, for a checkpoint, its data set's class names."""
    dataset = (getattr(model, "checkpoint_metadata", None) or {}).get("dataset") or {}
    names = dataset.get("class_names") if isinstance(dataset, dict) else None
    classes = int(getattr(model, "num_classes"))
    return Interface(label, classes, int(getattr(model, "in_channels", 3)), getattr(model, "image_size", None),
                     tuple(names) if isinstance(names, list) and len(names) == classes else None,
                     tuple(getattr(model, "value_range", PIXELS)))


def of_checkpoint(label: str, metadata: dict[str, Any]) -> Interface:
    """A checkpoint's interface from its (checked) metadata alone, without building the model."""
    dataset = metadata.get("dataset") or {}
    return Interface(label, int(metadata["num_classes"]), int(metadata["in_channels"]), int(metadata["image_size"]),
                     tuple(dataset["class_names"]) if dataset.get("class_names") else None)


def of_data(label: str, classes: int, channels: int, size: int | None, class_names: Any = None) -> Interface:
    """A data set's interface (its test images as the verbs give them: floats in [0, 1])."""
    names = tuple(str(n) for n in class_names) if class_names is not None else None
    return Interface(label, int(classes), int(channels), size, names if names and len(names) == classes else None,
                     PIXELS, "has")


def _range(values: tuple[float, float]) -> str:
    return f"[{values[0]:g}, {values[1]:g}]"


def _first_other_name(a: Interface, b: Interface) -> str | None:
    if a.class_names is None or b.class_names is None or a.class_names == b.class_names:
        return None
    k = next(i for i, (x, y) in enumerate(zip(a.class_names, b.class_names)) if x != y)
    return f"{a.label} names class {k} '{a.class_names[k]}' but {b.label} names it '{b.class_names[k]}'"


def difference(a: Interface, b: Interface) -> str | None:
    """The first way ``b`` does not fit ``a``, in words, or None when they agree."""
    if a.channels != b.channels:
        return f"{a.label} {a.verb} {a.channels}-channel images but {b.label} {b.verb} {b.channels}-channel images"
    if a.classes != b.classes:
        return f"{a.label} has {a.classes} classes but {b.label} has {b.classes}"
    named = _first_other_name(a, b)
    if named:
        return named
    if a.size is not None and b.size is not None and a.size != b.size:
        return f"{a.label} {a.verb} {a.size}×{a.size} images but {b.label} {b.verb} {b.size}×{b.size} images"
    if a.value_range != b.value_range:
        return (f"{a.label} {a.verb} pixels in {_range(a.value_range)} but {b.label} {b.verb} pixels in "
                f"{_range(b.value_range)}")
    return None


def require_match(a: Interface, b: Interface, advice: str) -> None:
    """Refuse, in one line with ``advice``, a pair that does not fit (see :func:`difference`)."""
    problem = difference(a, b)
    if problem:
        raise UserError(f"{problem}; {advice}")
