"""``jpegdl_<arch>`` for every architecture: JPEG-DL's trainable JPEG layer in front of ``<arch>``.

Seed paper: Salamah, Zheng, Liu, Yang, "JPEG Inspired Deep Learning", ICLR 2025. The layer works
on the [0, 1] pixels, before the model's normalization, so it quantizes true JPEG coefficients.
"""

from __future__ import annotations

from robust_kd.jpeg import JpegLayer
from robust_kd.models.registry import _REGISTRY, list_models, register_model

PREFIX = "jpegdl_"
FAMILY = "jpegdl"


def plain_architecture(name: str) -> str:
    """``<arch>`` for ``jpegdl_<arch>``, any other name unchanged: the JPEG layer does not change which
    per-architecture published values (learning rate, per-pair method options) apply."""
    return name.removeprefix(PREFIX)


def register_jpegdl_variants() -> None:
    for name in list_models():
        spec = _REGISTRY[name]
        if spec.input_layer is None and not name.startswith(PREFIX) and PREFIX + name not in _REGISTRY:
            register_model(PREFIX + name, family=FAMILY, builder=spec.builder, input_layer=JpegLayer)


register_jpegdl_variants()
