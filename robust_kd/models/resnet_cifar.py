"""CIFAR ResNets (He et al., 2016, Sec. 4.2) as used in the CRD benchmark.

A 3x3 stem and three stages of BasicBlocks at strides 1, 2, 2; depth = 6n + 2 with n blocks per
stage. ``resnet8x4`` / ``resnet32x4`` are the 4x wider teachers/students of the CRD paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from robust_kd.models.registry import register_model
from robust_kd.models.resnet_blocks import BasicBlock, make_stage
from robust_kd.models.weight_init import init_conv_and_batchnorm

FAMILY = "resnet_cifar"
# (stem, stage1, stage2, stage3) widths
NARROW_WIDTHS = (16, 16, 32, 64)
WIDE_WIDTHS = (32, 64, 128, 256)


class CifarResNet(nn.Module):
    def __init__(
        self, depth: int, widths: Sequence[int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem_width, *stage_widths = widths

        self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        width = stem_width
        self.layer1, width = make_stage(BasicBlock, width, stage_widths[0], blocks_per_stage, 1)
        self.layer2, width = make_stage(BasicBlock, width, stage_widths[1], blocks_per_stage, 2)
        self.layer3, width = make_stage(BasicBlock, width, stage_widths[2], blocks_per_stage, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        init_conv_and_batchnorm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(num_classes: int, in_channels: int, *, depth: int, widths: Sequence[int]) -> CifarResNet:
    return CifarResNet(depth, widths, num_classes, in_channels)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    register_model(
        f"resnet{_depth}", family=FAMILY, builder=partial(build, depth=_depth, widths=NARROW_WIDTHS)
    )
for _depth in (8, 32):
    register_model(
        f"resnet{_depth}x4", family=FAMILY, builder=partial(build, depth=_depth, widths=WIDE_WIDTHS)
    )
