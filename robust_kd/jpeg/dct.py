"""The orthonormal 8×8 block DCT-II of JPEG, as two small matrix products per block.

``X = D·f·Dᵀ`` with ``D[u, x] = c(u)/2 · cos((2x+1)uπ/16)``, ``c(0) = 1/√2``, else 1: exactly the
JPEG definition. D is orthogonal, so the inverse is ``f = Dᵀ·X·D``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .constants import like

BLOCK = 8


def dct_matrix(n: int = BLOCK, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    u = torch.arange(n, dtype=dtype)[:, None]
    x = torch.arange(n, dtype=dtype)[None, :]
    scale = torch.where(u == 0, torch.tensor(math.sqrt(1.0 / n), dtype=dtype),
                        torch.tensor(math.sqrt(2.0 / n), dtype=dtype))
    return scale * torch.cos((2 * x + 1) * u * math.pi / (2 * n))


_D = dct_matrix()  # float64; cast to the input dtype on use


def to_blocks(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """B×C×H×W → B×C×(H'/8)×(W'/8)×8×8 after padding to a multiple of 8 by edge replication (as libjpeg)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % BLOCK, (-width) % BLOCK
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 1, 2, 4, 3, 5)
    return blocks, (height, width)


def from_blocks(blocks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, c, nh, nw, _, _ = blocks.shape
    x = blocks.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * BLOCK, nw * BLOCK)
    return x[..., : size[0], : size[1]]


def block_dct(blocks: torch.Tensor) -> torch.Tensor:
    d = like(_D, blocks)
    return d @ blocks @ d.T


def block_idct(coefficients: torch.Tensor) -> torch.Tensor:
    d = like(_D, coefficients)
    return d.T @ coefficients @ d
