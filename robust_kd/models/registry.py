"""The model registry: architecture names, their families and builders, and ``create_model``.

Architecture modules register their names at import time; other packages may register more
names (e.g. JPEG-DL variants) the same way. A builder is called as
``builder(num_classes, in_channels)`` and returns the bare architecture; ``create_model`` puts
the input normalization in front of it.
"""

from __future__ import annotations

import difflib
import inspect
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from robust_kd.errors import UserError
from robust_kd.models.normalize import Normalize, NormalizedClassifier

Builder = Callable[[int, int], nn.Module]
# input_layer(in_channels, **options) -> a module placed before the normalization (e.g. JPEG)
InputLayerBuilder = Callable[..., nn.Module]

SUPPORTED_IN_CHANNELS = (1, 3)
DEFAULT_MEAN = 0.5
DEFAULT_STD = 0.25
# The architectures halve the resolution three or four times before global pooling; below 8
# pixels their last stages would only ever see 1x1 maps.
MIN_IMAGE_SIZE = 8
# A head for 100,000 classes is already up to 800 MB of float32 weights on the widest of these networks
# (2,048 features); the largest image classification sets in use have about 22,000 (ImageNet-21k).
MAX_NUM_CLASSES = 100_000


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    builder: Builder
    input_layer: InputLayerBuilder | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, family: str, builder: Builder | None = None, input_layer: InputLayerBuilder | None = None
):
    """Register ``builder`` under ``name``; without ``builder``, return a decorator that does so.

    ``input_layer``, when given, builds a module that sees the [0, 1] images before the
    normalization (JPEG-DL's JPEG layer); it is called as ``input_layer(in_channels, **options)``.

    Registering a name twice is a programming error and raises ``ValueError``.
    """
    if not name or name != name.strip() or any(ch.isspace() for ch in name):
        raise ValueError(f"model name must be a non-empty word, got {name!r}")
    if not family:
        raise ValueError(f"model {name!r} needs a family")

    def add(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name=name, family=family, builder=fn, input_layer=input_layer)
        return fn

    if builder is None:
        return add
    return add(builder)


def _natural_key(name: str) -> list[object]:
    """Sort key that orders embedded numbers by value: resnet8 < resnet14 < resnet110."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def list_models() -> list[str]:
    """All registered names, in natural sort order."""
    return sorted(_REGISTRY, key=_natural_key)


def _lookup(name: str) -> ModelSpec:
    """The spec registered as ``name``, or a ``UserError`` naming the closest registered name."""
    if not isinstance(name, str):
        raise UserError(f"model name must be a string, got {name!r}")
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    names = list_models()
    by_lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f" did you mean '{by_lower[close[0]]}'?" if close else ""
    raise UserError(
        f"unknown model {name!r};{hint} choose one of: {', '.join(names)} "
        "(run 'robust-kd models' to list them)"
    )


def has_input_layer(name: str) -> bool:
    """Whether ``name`` puts a layer of its own (e.g. JPEG) in front of the normalization."""
    return _lookup(name).input_layer is not None


def input_layer_keywords(name: str) -> list[str]:
    """The options the input layer of ``name`` takes (``input_layer_options``); none without such a layer."""
    builder = _lookup(name).input_layer
    if builder is None:
        return []
    parameters = inspect.signature(builder).parameters.values()
    return [p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]


def model_family(name: str) -> str:
    """The family of a registered architecture, e.g. ``"resnet_cifar"`` or ``"vgg"``."""
    return _lookup(name).family


def _is_int(value: object) -> bool:
    """True for Python and NumPy integers, but not for ``True``/``False``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _channel_stats(
    values: Sequence[float] | None, default: float, what: str, in_channels: int
) -> list[float]:
    if values is None:
        return [default] * in_channels
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a list of numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{what} values must be finite numbers, got {values}")
    if len(values) != in_channels:
        raise UserError(
            f"{what} has {len(values)} values but the model takes {in_channels} input "
            f"channel(s); give one {what} per channel"
        )
    return values


def create_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_layer_options: Mapping[str, Any] | None = None,
) -> NormalizedClassifier:
    """Build architecture ``name`` behind a ``Normalize`` layer; the result takes images in [0, 1].

    ``mean``/``std`` default to 0.5/0.25 per channel and must have ``in_channels`` values.
    ``input_layer_options`` go to the input layer of names that have one (``jpegdl_*``) and are
    ignored by the others. Bad arguments raise ``UserError`` with a one-line message.
    """
    spec = _lookup(name)
    if not _is_int(num_classes) or not 2 <= num_classes <= MAX_NUM_CLASSES:
        raise UserError(f"num_classes must be an integer from 2 to {MAX_NUM_CLASSES:,}, got {num_classes!r}")
    if not _is_int(in_channels) or in_channels not in SUPPORTED_IN_CHANNELS:
        raise UserError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    if not _is_int(image_size) or image_size < MIN_IMAGE_SIZE:
        raise UserError(
            f"image_size must be an integer of at least {MIN_IMAGE_SIZE} pixels, got {image_size!r}"
        )
    mean_values = _channel_stats(mean, DEFAULT_MEAN, "mean", in_channels)
    std_values = _channel_stats(std, DEFAULT_STD, "std", in_channels)
    if any(s <= 0 for s in std_values):
        raise UserError(f"std values must all be positive, got {std_values}")

    num_classes, in_channels, image_size = int(num_classes), int(in_channels), int(image_size)
    net = spec.builder(num_classes, in_channels)
    input_layer = spec.input_layer(in_channels, **dict(input_layer_options or {})) if spec.input_layer else None
    return NormalizedClassifier(
        net,
        Normalize(mean_values, std_values),
        arch=name,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        input_layer=input_layer,
    )
