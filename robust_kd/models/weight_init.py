"""Weight initialisations shared by the architectures, matching the CRD-benchmark code bases.

Layers not touched here keep PyTorch's defaults (the ShuffleNets use defaults throughout).
"""

from __future__ import annotations

from torch import nn


def init_conv_and_batchnorm(model: nn.Module) -> None:
    """Convs: Kaiming normal (fan-out, He et al.), zero bias. BatchNorm: weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_linear_small_normal(model: nn.Module, std: float = 0.01) -> None:
    """Linear layers: weights N(0, std^2), zero bias (the VGG / MobileNetV2 convention)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, std)
            nn.init.zeros_(module.bias)
