"""ShuffleNetV2 1x (Ma et al., 2018) in the CIFAR form of the CRD benchmark (``ShuffleV2``).

A 1x1 stem to 24 channels; three stages of one downsampling unit followed by 3/7/3 basic
units, at 116/232/464 channels; a final 1x1 conv to 1024. PyTorch default initialisation,
as in the CRD code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robust_kd.models.channel_shuffle import ChannelShuffle
from robust_kd.models.registry import register_model

FAMILY = "shufflenet"
STEM_WIDTH = 24


def _depthwise3x3(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False)


def _pointwise(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class SplitUnit(nn.Module):
    """Stride-1 unit: half the channels pass through untouched, the other half go through
    1x1 - depthwise 3x3 - 1x1; the halves are concatenated and shuffled."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = _pointwise(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = _depthwise3x3(half, stride=1)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _pointwise(half, half)
        self.bn3 = nn.BatchNorm2d(half)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return self.shuffle(torch.cat([kept, out], dim=1))


class DownsampleUnit(nn.Module):
    """Stride-2 unit: both branches see the whole input and each yields half the output channels.

    Left: depthwise 3x3 (stride 2) - 1x1. Right: 1x1 - depthwise 3x3 (stride 2) - 1x1.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = _depthwise3x3(in_channels, stride=2)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _pointwise(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = _pointwise(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = _depthwise3x3(mid, stride=2)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _pointwise(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], dim=1))


class ShuffleNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        stage_widths: Sequence[int] = (116, 232, 464),
        stage_units: Sequence[int] = (3, 7, 3),
        last_width: int = 1024,
    ) -> None:
        super().__init__()
        self.conv1 = _pointwise(in_channels, STEM_WIDTH)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        width = STEM_WIDTH
        stages = []
        for out_width, num_units in zip(stage_widths, stage_units):
            units = [DownsampleUnit(width, out_width)]
            units += [SplitUnit(out_width) for _ in range(num_units)]
            stages.append(nn.Sequential(*units))
            width = out_width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = _pointwise(width, last_width)
        self.bn2 = nn.BatchNorm2d(last_width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


register_model("shufflev2", family=FAMILY, builder=ShuffleNetV2)
