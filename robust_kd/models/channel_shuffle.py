"""Channel shuffle (Zhang et al., 2018): lets information cross the groups of grouped convs."""

from __future__ import annotations

import torch
from torch import nn


class ChannelShuffle(nn.Module):
    """View channels as (groups, C / groups), transpose to (C / groups, groups), flatten back."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        x = x.view(batch, self.groups, channels // self.groups, height, width)
        return x.transpose(1, 2).reshape(batch, channels, height, width)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"
