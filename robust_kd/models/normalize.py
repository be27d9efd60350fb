"""Input normalization as part of the model, so every model takes images in [0, 1].

Keeping the per-channel mean/std inside the module (as buffers) means attacks can work in pixel
space with an epsilon measured in [0, 1] units, and a checkpoint carries its own normalization.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _as_channel_buffer(values: Sequence[float]) -> torch.Tensor:
    return torch.tensor(list(values), dtype=torch.float32).view(1, -1, 1, 1)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with mean and std stored as (1, C, 1, 1) buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        self.register_buffer("mean", _as_channel_buffer(mean))
        self.register_buffer("std", _as_channel_buffer(std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedClassifier(nn.Module):
    """An architecture behind its input normalization: ``forward(x) = net(normalize(x))``.

    The submodules are registered in this order, ``normalize`` first and ``net`` second, so
    forward-hook names read ``net.layer1.0.conv1`` and so on. ``image_size`` records the side
    length the model was created for; the architectures themselves pool adaptively and accept
    other sizes too. An optional ``input_layer`` (JPEG-DL's JPEG layer) comes before both and
    sees the images in [0, 1]: ``forward(x) = net(normalize(input_layer(x)))``.
    """

    def __init__(
        self,
        net: nn.Module,
        normalize: Normalize,
        *,
        arch: str,
        num_classes: int,
        in_channels: int,
        image_size: int,
        input_layer: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.input_layer = input_layer  # registered as a submodule when it is one
        self.normalize = normalize
        self.net = net
        self.arch = arch
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_layer is not None:
            x = self.input_layer(x)
        return self.net(self.normalize(x))

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, num_classes={self.num_classes}, "
            f"in_channels={self.in_channels}, image_size={self.image_size}"
        )
