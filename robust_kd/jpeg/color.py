"""JFIF colour conversion (full-range BT.601), on tensors at the 0–255 scale."""

from __future__ import annotations

import torch

from .constants import like

# rows: Y, Cb, Cr from R, G, B (JFIF / ITU-T T.871)
RGB_TO_YCBCR = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.168735892, -0.331264108, 0.5],
    [0.5, -0.418687589, -0.081312411],
])
YCBCR_OFFSET = torch.tensor([0.0, 128.0, 128.0])
YCBCR_TO_RGB = torch.linalg.inv(RGB_TO_YCBCR.double()).float()


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oc,bchw->bohw", like(matrix, x), x)


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """B×3×H×W RGB in [0, 255] → YCbCr in [0, 255] (chroma centred on 128)."""
    return _mix(RGB_TO_YCBCR, rgb) + like(YCBCR_OFFSET, rgb).view(1, 3, 1, 1)


def ycbcr_to_rgb(ycbcr: torch.Tensor) -> torch.Tensor:
    return _mix(YCBCR_TO_RGB, ycbcr - like(YCBCR_OFFSET, ycbcr).view(1, 3, 1, 1))
