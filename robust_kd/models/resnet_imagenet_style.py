"""ResNet-18/34/50 with the ImageNet block layout, adapted to small images (CRD's ``ResNet50``).

Four stages at 64/128/256/512 base width (strides 1, 2, 2, 2), but a 3x3 stride-1 stem and no
max-pool, so 32x32 inputs reach the last stage at 4x4.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from robust_kd.models.registry import register_model
from robust_kd.models.resnet_blocks import BasicBlock, Bottleneck, ResidualBlock, make_stage
from robust_kd.models.weight_init import init_conv_and_batchnorm

FAMILY = "resnet_imagenet_style"
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
# name -> (block, blocks per stage)
LAYOUTS: dict[str, tuple[ResidualBlock, tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class SmallImageResNet(nn.Module):
    def __init__(
        self,
        block: ResidualBlock,
        blocks_per_stage: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        width = STAGE_WIDTHS[0]
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        for planes, num_blocks, stride in zip(STAGE_WIDTHS, blocks_per_stage, STAGE_STRIDES):
            stage, width = make_stage(block, width, planes, num_blocks, stride)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        init_conv_and_batchnorm(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build(
    num_classes: int, in_channels: int, *, block: ResidualBlock, blocks_per_stage: Sequence[int]
) -> SmallImageResNet:
    return SmallImageResNet(block, blocks_per_stage, num_classes, in_channels)


for _name, (_block, _layout) in LAYOUTS.items():
    register_model(
        _name, family=FAMILY, builder=partial(build, block=_block, blocks_per_stage=_layout)
    )
