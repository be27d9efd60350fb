"""MobileNetV2 (Sandler et al., 2018) in the CIFAR form of the CRD benchmark (``mobile_half``).

Width multiplier 0.5, expansion 6, plain ReLU. CIFAR strides: a stride-2 stem and stride 1 in
the 24-channel stage, so the network downsamples 16x in all (32x32 -> 2x2 before pooling).
The last 1x1 conv keeps 1280 channels for width multipliers up to 1.
"""

from __future__ import annotations

import torch
from torch import nn

from robust_kd.models.registry import register_model
from robust_kd.models.weight_init import init_conv_and_batchnorm, init_linear_small_normal

FAMILY = "mobilenet"
STEM_WIDTH = 32
LAST_WIDTH = 1280
# (expansion, or None for the network's expansion T; output width; blocks; stride of first block)
STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise (carries the stride) - 1x1 linear projection.

    The expand conv is kept even at expansion 1, as in the CRD code. The input is added back
    when the block keeps both stride 1 and the channel count.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        self.use_residual = stride == 1 and in_planes == out_planes
        self.conv = nn.Sequential(
            nn.Conv2d(in_planes, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        *,
        expansion: int = 6,
        width_mult: float = 0.5,
    ) -> None:
        super().__init__()
        width = int(STEM_WIDTH * width_mult)
        self.conv1 = conv_bn_relu(in_channels, width, 3, stride=2)
        stages = []
        for stage_expansion, base_width, num_blocks, stride in STAGES:
            out_width = int(base_width * width_mult)
            blocks = []
            for index in range(num_blocks):
                blocks.append(
                    InvertedResidual(
                        width,
                        out_width,
                        stride if index == 0 else 1,
                        expansion if stage_expansion is None else stage_expansion,
                    )
                )
                width = out_width
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        last_width = int(LAST_WIDTH * width_mult) if width_mult > 1.0 else LAST_WIDTH
        self.conv2 = conv_bn_relu(width, last_width, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last_width, num_classes)
        init_conv_and_batchnorm(self)
        init_linear_small_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.conv2(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))


register_model("mobilenetv2", family=FAMILY, builder=MobileNetV2)
