"""Adaptive-attack helpers: BPDA and EOT as model wrappers, so every attack can use them.

- :class:`BPDA` (Athalye, Carlini and Wagner, ICML 2018): the forward pass is the real,
  possibly non-differentiable ``forward_module``; the backward pass is that of a differentiable
  stand-in (``backward_module``, the identity by default). Its output *value* is exactly the real
  one, so verdicts computed through it are the real model's.
- :class:`EOT`: the mean logits over ``samples`` forward passes of a randomised model, whose
  gradient is the mean of the gradients (expectation over transformation).
"""

from __future__ import annotations

import torch
from torch import nn


class BPDA(nn.Module):
    """out = g(x) + (f(x) − g(x)).detach(): the value of f, the gradient of g."""

    def __init__(self, forward_module: nn.Module, backward_module: nn.Module | None = None) -> None:
        super().__init__()
        self.forward_module = forward_module
        self.backward_module = backward_module if backward_module is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.forward_module(x)
        surrogate = self.backward_module(x)
        return surrogate + (real - surrogate).detach()


class EOT(nn.Module):
    """Average logits over ``samples`` passes of a model with randomness in its forward pass."""

    def __init__(self, model: nn.Module, samples: int = 20) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError("EOT needs at least one sample")
        self.model = model
        self.samples = samples

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x) for _ in range(self.samples)]).mean(dim=0)
