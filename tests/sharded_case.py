"""A small, fully deterministic evaluation case shared by tests/test_distributed.py and the worker it
starts under torchrun: a nearest-prototype classifier (any nn.Module will do for the attack library)
on noisy prototype images, and a suite whose attacks all draw per-point randomness."""

from __future__ import annotations

import torch
from torch import nn

SUITE = {"name": "sharded-check", "attacks": [
    {"attack": "pgd", "label": "pgd-2", "steps": 2, "alpha_fraction": 0.25},
    {"attack": "apgd", "label": "apgd-dlr", "steps": 10, "loss": "dlr"},
    {"attack": "square", "queries": 150},
]}
EPS = 6 / 255


class Prototypes(nn.Module):
    def __init__(self, prototypes: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("prototypes", prototypes.flatten(1))
        self.images = 0         # images seen, to tell how much work an evaluation did

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return -40.0 * torch.cdist(x.flatten(1), self.prototypes)


def make_case(n: int = 48) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    prototypes = 0.45 + 0.1 * torch.rand(4, 3, 8, 8, generator=generator)
    y = torch.arange(n) % 4
    x = (prototypes[y] + 0.1 * torch.randn(n, 3, 8, 8, generator=generator)).clamp(0, 1)
    return Prototypes(prototypes).eval(), x, y
