"""FGSM: one signed gradient step of size eps (Goodfellow, Shlens and Szegedy, ICLR 2015)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .core import Attack, input_gradient, normalized_step, project
from .suites import register_attack


@register_attack
@dataclass
class FGSM(Attack):
    """x_adv = clip(x + eps·sign(∇ₓ CE)) for Linf; for L2 the step is eps·∇/‖∇‖₂."""

    name = "fgsm"
    single_step = True

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        _, _, grad = input_gradient(model, x, lambda logits: F.cross_entropy(logits, y, reduction="none"))
        return project(x + self.eps * normalized_step(grad, self.norm), x, self.eps, self.norm).detach()
