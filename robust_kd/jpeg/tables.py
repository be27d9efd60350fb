"""Quantization tables: the standard ones of the JPEG standard and their quality scaling.

The base tables are those of ITU-T T.81 Annex K (K.1 luminance, K.2 chrominance), in natural
(row-major) order. Quality scaling follows the Independent JPEG Group's convention, which Pillow
and libjpeg use.
"""

from __future__ import annotations

import torch

from ..errors import UserError

STANDARD_LUMA = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=torch.float32)

STANDARD_CHROMA = torch.tensor([
    [17, 18, 24, 47, 99, 99, 99, 99],
    [18, 21, 26, 66, 99, 99, 99, 99],
    [24, 26, 56, 99, 99, 99, 99, 99],
    [47, 66, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
    [99, 99, 99, 99, 99, 99, 99, 99],
], dtype=torch.float32)


def quality_scale(quality: int) -> int:
    """IJG: percentage by which the base tables are scaled for a quality in 1..100."""
    if not 1 <= int(quality) <= 100:
        raise UserError(f"JPEG quality must lie in 1..100, got {quality}")
    quality = int(quality)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def scaled_table(base: torch.Tensor, quality: int) -> torch.Tensor:
    """The baseline (8-bit) table at ``quality``: floor((base·scale + 50) / 100) clamped to 1..255."""
    scale = quality_scale(quality)
    return torch.clamp(torch.div(base * scale + 50, 100, rounding_mode="floor"), 1, 255)


def standard_tables(quality: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) tables at ``quality``."""
    return scaled_table(STANDARD_LUMA, quality), scaled_table(STANDARD_CHROMA, quality)
