"""ShuffleNetV1 (Zhang et al., 2018) in the CIFAR form of the CRD benchmark (``ShuffleV1``).

A 1x1 stem to 24 channels, three stages of 4/8/4 units ending at 240/480/960 channels with
3 groups, each stage opening with a stride-2 unit. PyTorch default initialisation, as in the
CRD code.
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


class ShuffleUnit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; the bottleneck is a quarter as wide
    as the branch output.

    A stride-1 unit adds its input back. A stride-2 unit concatenates its branch with the
    3x3-average-pooled input, so its output has ``branch_planes + in_planes`` channels.
    ``group_first_conv=False`` makes the first 1x1 conv dense, for the very first unit whose
    24-channel input is too narrow to split.
    """

    def __init__(
        self,
        in_planes: int,
        branch_planes: int,
        stride: int,
        groups: int,
        group_first_conv: bool = True,
    ) -> None:
        super().__init__()
        mid_planes = branch_planes // 4
        first_groups = groups if group_first_conv else 1
        self.stride = stride
        self.conv1 = nn.Conv2d(in_planes, mid_planes, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, 3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, branch_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_planes)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is None:
            return F.relu(out + x)
        return F.relu(torch.cat([out, self.shortcut(x)], dim=1))


class ShuffleNetV1(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        stage_widths: Sequence[int] = (240, 480, 960),
        stage_units: Sequence[int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, STEM_WIDTH, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.relu = nn.ReLU()
        width = STEM_WIDTH
        stages = []
        for stage_index, (out_width, num_units) in enumerate(zip(stage_widths, stage_units)):
            units = []
            for unit_index in range(num_units):
                downsampling = unit_index == 0
                units.append(
                    ShuffleUnit(
                        width,
                        out_width - width if downsampling else out_width,
                        stride=2 if downsampling else 1,
                        groups=groups,
                        group_first_conv=not (stage_index == 0 and unit_index == 0),
                    )
                )
                width = out_width
            stages.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


register_model("shufflev1", family=FAMILY, builder=ShuffleNetV1)
