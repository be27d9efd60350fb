"""Parameter and multiply-accumulate (MAC) counts, measured with forward hooks.

MACs, not FLOPs: one multiply-accumulate counts once. Only layers with a counter in
``MAC_COUNTERS`` contribute (convolutions and linear layers, which dominate these networks);
normalization, activations, pooling and bias additions are not counted, as in the usual
KD-literature tables.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

MacCounter = Callable[[nn.Module, torch.Tensor], int]


def conv2d_macs(conv: nn.Conv2d, output: torch.Tensor) -> int:
    """Each output element takes (in_channels / groups) * kernel_h * kernel_w MACs."""
    kernel_h, kernel_w = conv.kernel_size
    return output.numel() * (conv.in_channels // conv.groups) * kernel_h * kernel_w


def linear_macs(linear: nn.Linear, output: torch.Tensor) -> int:
    """Each output element takes in_features MACs."""
    return output.numel() * linear.in_features


# Keyed by layer class; a subclass is counted by its nearest registered base class.
MAC_COUNTERS: dict[type[nn.Module], MacCounter] = {
    nn.Conv2d: conv2d_macs,
    nn.Linear: linear_macs,
}


def _counter_for(module: nn.Module) -> MacCounter | None:
    for cls in type(module).__mro__:
        if cls in MAC_COUNTERS:
            return MAC_COUNTERS[cls]
    return None


def model_complexity(
    model: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)
) -> tuple[int, int]:
    """Return ``(parameters, MACs)`` of ``model`` for one input of shape ``input_size`` (C, H, W).

    The forward pass runs in eval mode under ``torch.no_grad()``; every module's training flag is
    restored and all hooks are removed afterwards, even if the forward pass fails.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
    parameters = sum(p.numel() for p in model.parameters())

    macs = 0

    def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        macs += _counter_for(module)(module, output)

    handles = [
        module.register_forward_hook(count)
        for module in model.modules()
        if _counter_for(module) is not None
    ]
    training_flags = {module: module.training for module in model.modules()}
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_size, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        for module, was_training in training_flags.items():
            module.training = was_training
    return parameters, macs
