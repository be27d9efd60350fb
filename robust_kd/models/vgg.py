"""VGG with batch norm in the CIFAR form of the CRD benchmark (no hidden FC layers).

Five groups of 3x3 conv-BN-ReLU (``block0`` .. ``block4``), 2x2 max-pools between them,
global average pooling and one Linear(512, classes).

The pool in front of the last group (``pool3``) is applied only to inputs of at least
``FOURTH_POOL_MIN_INPUT`` pixels. That is how the CRD code (RepDistiller, mdistiller) runs: at
32x32 it skips that pool, so ``block4`` works on 4x4 maps (as it does on 64x64 Tiny-ImageNet
inputs with the pool). Skipping it changes MACs, not parameters; set the constant to 0 for
a pool after every group. ``pool3`` decides from the size of its own input (the image size
divided by 8, rounded down, after three pools), so that the forward has no branch of its own and
``torch.fx`` can trace it (attacks.fold).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from robust_kd.models.registry import register_model
from robust_kd.models.weight_init import init_conv_and_batchnorm, init_linear_small_normal

FAMILY = "vgg"
FOURTH_POOL_MIN_INPUT = 64

# Output widths of the convs in each of the five groups.
GROUP_WIDTHS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


class SizeGatedMaxPool(nn.MaxPool2d):
    """2x2 max-pool applied only to maps at least ``min_size`` wide; smaller ones pass unchanged."""

    def __init__(self, min_size: int) -> None:
        super().__init__(2, 2)
        self.min_size = min_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if x.shape[-1] >= self.min_size else x


def conv_group(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv3x3 (with bias) - BN - ReLU for each width; indices 0,1,2, 3,4,5, ..."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    def __init__(
        self, groups: Sequence[Sequence[int]], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if len(groups) != 5:
            raise ValueError(f"VGG needs five conv groups, got {len(groups)}")
        self.block0 = conv_group(in_channels, groups[0])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.block1 = conv_group(groups[0][-1], groups[1])
        self.pool1 = nn.MaxPool2d(2, 2)
        self.block2 = conv_group(groups[1][-1], groups[2])
        self.pool2 = nn.MaxPool2d(2, 2)
        self.block3 = conv_group(groups[2][-1], groups[3])
        # three 2x2 pools before it: a map at least FOURTH_POOL_MIN_INPUT // 8 wide means an image at
        # least FOURTH_POOL_MIN_INPUT wide (floor(w / 8) >= m  <=>  w >= 8m)
        self.pool3 = SizeGatedMaxPool(FOURTH_POOL_MIN_INPUT // 8)
        self.block4 = conv_group(groups[3][-1], groups[4])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(groups[4][-1], num_classes)
        init_conv_and_batchnorm(self)
        init_linear_small_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.pool3(self.block3(x))
        x = self.block4(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def build(num_classes: int, in_channels: int, *, groups: Sequence[Sequence[int]]) -> CifarVGG:
    return CifarVGG(groups, num_classes, in_channels)


for _name, _groups in GROUP_WIDTHS.items():
    register_model(_name, family=FAMILY, builder=partial(build, groups=_groups))
