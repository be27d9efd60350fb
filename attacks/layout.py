"""Channels-last convolutions for the length of an evaluation.

oneDNN (CPU) and cuDNN (CUDA) run 2-D convolutions faster on channels-last weights: 1.2x on a whole
AutoAttack evaluation on CPU (docs/benchmarks.md). Converting the weights is enough: a convolution
with channels-last weights gives channels-last output whatever the input's layout, so the attacks'
own tensors stay as they are. The logits differ from the plain layout's by float rounding only.

The caller's modules are converted in place (the parameters stay the same objects) and put back
in the plain layout afterwards, unless they were channels-last already.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn

FAST_LAYOUT_DEVICES = ("cpu", "cuda")


def _conv_weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]


def _needs_conversion(weights: list[torch.Tensor]) -> bool:
    """Some convolution is not channels-last (where both layouts coincide, as with one input channel
    or 1×1 kernels, there is nothing to convert)."""
    return any(not w.is_contiguous(memory_format=torch.channels_last) for w in weights)


@contextlib.contextmanager
def channels_last(modules: Iterable[object], device: torch.device, enabled: bool | None = None) -> Iterator[bool]:
    """Run the block with every module's convolutions channels-last; yields whether it converted.

    ``enabled=None`` converts on CPU and CUDA when a module has a Conv2d. Anything that is not an
    ``nn.Module`` (None, a plain function standing in for a model) is left alone.
    """
    unique: dict[int, nn.Module] = {}
    for module in modules:
        if isinstance(module, nn.Module):
            unique.setdefault(id(module), module)
    wanted = device.type in FAST_LAYOUT_DEVICES if enabled is None else enabled
    converted = [m for m in unique.values() if wanted and _needs_conversion(_conv_weights(m))]
    for module in converted:
        module.to(memory_format=torch.channels_last)
    try:
        yield bool(converted)
    finally:
        for module in converted:
            module.to(memory_format=torch.contiguous_format)
