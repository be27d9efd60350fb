"""Initial quantization tables of JPEG-DL, computed from training data.

- ``sensitivity`` (the authors' CIFAR default): with a pretrained plain model of the same
  architecture, s_k = mean over images and blocks of (∂CE/∂X_k)² for each DCT frequency k;
  Q_Y ∝ 1/s_Y, Q_C ∝ 2/(s_Cb + s_Cr); one factor scales both so that max(Q_Y) = q_max (10).
- ``abs_avg``: Q = 2·mean|X_k| / sqrt(2^(b−1)) with b = 8 (luma from Y, chroma from Cb and Cr).
- ``standard``: the standard JPEG tables at the layer's quality (what the layer starts with).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .layer import JpegLayer

ABS_AVG_BITS = 8
Tables = tuple[torch.Tensor, "torch.Tensor | None"]


@torch.no_grad()
def abs_avg_tables(layer: JpegLayer, images: torch.Tensor) -> Tables:
    coefficients, _ = layer.coefficients(images)
    mean_abs = coefficients.abs().mean(dim=(0, 2, 3))  # C×8×8
    scale = 2.0 / (2 ** (ABS_AVG_BITS - 1)) ** 0.5
    chroma = scale * mean_abs[1:].mean(dim=0) if layer.channels == 3 else None
    return scale * mean_abs[0], chroma


def sensitivity_tables(layer: JpegLayer, images: torch.Tensor, labels: torch.Tensor, model: nn.Module,
                       q_max: float = 10.0, batch_size: int = 64, batchnorm: str = "train") -> Tables:
    """JPEG-DL's sensitivity initialisation; ``model`` is a pretrained plain classifier. As in the
    authors' code the model runs with BatchNorm in train mode (batch statistics of ``batch_size``
    images) unless ``batchnorm="eval"``; the model given is used for this alone."""
    transform = JpegLayer(layer.channels, mode="off").to(images.device)
    model.train(batchnorm == "train")
    total = torch.zeros(layer.channels, 8, 8, dtype=torch.float64, device=images.device)
    count = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        coefficients, size = transform.coefficients(x)
        coefficients = coefficients.detach().requires_grad_(True)
        loss = F.cross_entropy(model(transform.images(coefficients, size)).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, coefficients)
        total += grad.double().square().sum(dim=(0, 2, 3))
        count += grad.shape[0] * grad.shape[2] * grad.shape[3]
    model.eval()
    return tables_from_sensitivity((total / max(count, 1)).float(), q_max)


def tables_from_sensitivity(sensitivity: torch.Tensor, q_max: float = 10.0) -> Tables:
    """Tables from per-frequency sensitivities s (C×8×8, any common scale): Q_Y ∝ 1/s_Y and
    Q_C ∝ 2/(s_Cb + s_Cr), both scaled by the one factor that makes max(Q_Y) = q_max (the chroma table
    may exceed it), as the authors' code does with its shipped maps."""
    sensitivity = sensitivity.clamp_min(1e-20)
    luma = 1.0 / sensitivity[0]
    chroma = 2.0 / (sensitivity[1] + sensitivity[2]) if sensitivity.shape[0] == 3 else None
    factor = q_max / luma.max()
    return luma * factor, (chroma * factor if chroma is not None else None)


def initialize_tables(
    layer: JpegLayer,
    method: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    pretrained: Callable[[], nn.Module] | None = None,
    q_max: float = 10.0,
    batchnorm: str = "train",
) -> None:
    """Set ``layer``'s tables by ``method``; ``pretrained`` loads the model sensitivity needs."""
    if method == "standard":
        return
    if method == "abs_avg":
        luma, chroma = abs_avg_tables(layer, images)
    elif method == "sensitivity":
        if pretrained is None:
            raise UserError(
                "jpeg.init=sensitivity needs a pretrained plain model of the same task: "
                "set jpeg.init_checkpoint=<path to its .pt>, or use jpeg.init=abs_avg"
            )
        luma, chroma = sensitivity_tables(layer, images, labels, pretrained(), q_max=q_max, batchnorm=batchnorm)
    else:
        raise UserError(f"unknown jpeg.init '{method}'; choose one of: {', '.join(INIT_METHODS)}")
    layer.set_tables(luma, chroma)


INIT_METHODS = ("standard", "abs_avg", "sensitivity")
