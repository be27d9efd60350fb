"""Wide ResNets (Zagoruyko & Komodakis, 2016) with pre-activation blocks and no dropout.

``wrn_<depth>_<k>``: depth = 6n + 4 (n blocks per stage), stage widths 16k, 32k, 64k after a
16-channel stem. Because blocks are pre-activation, the network ends with BN + ReLU before pooling.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from robust_kd.models.registry import register_model
from robust_kd.models.weight_init import init_conv_and_batchnorm

FAMILY = "wrn"
STEM_WIDTH = 16


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice. When the shape changes, a 1x1 conv on the *activated* input forms
    the shortcut (the original WRN wiring); otherwise the raw input is added back."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        needs_projection = in_planes != out_planes or stride != 1
        self.shortcut = (
            nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
            if needs_projection
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(F.relu(self.bn2(out)))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        return out + shortcut


def _stage(in_planes: int, out_planes: int, num_blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *(
            PreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(num_blocks)
        )
    )


class WideResNet(nn.Module):
    def __init__(
        self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)

        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 3, stride=1, padding=1, bias=False)
        self.layer1 = _stage(STEM_WIDTH, widths[0], n, stride=1)
        self.layer2 = _stage(widths[0], widths[1], n, stride=2)
        self.layer3 = _stage(widths[1], widths[2], n, stride=2)
        self.bn = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        init_conv_and_batchnorm(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(num_classes: int, in_channels: int, *, depth: int, widen_factor: int) -> WideResNet:
    return WideResNet(depth, widen_factor, num_classes, in_channels)


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    register_model(
        f"wrn_{_depth}_{_k}", family=FAMILY, builder=partial(build, depth=_depth, widen_factor=_k)
    )
