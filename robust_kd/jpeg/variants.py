"""The versions of a JPEG-DL model that a robustness evaluation must attack.

A ``jpegdl_*`` model is an input-transformation defence, so one white-box number is not enough
(Athalye et al. 2018; the robustness notes §5): the suites attack

- ``soft``: the model as trained, with the differentiable soft quantizer: plain white-box, then
  the same gradient attacks through BPDA with the identity in place of the JPEG layer (the soft
  quantizer at α = 5 is nearly a staircase, and its gradients mislead: on a 1-epoch
  jpegdl_resnet8x4, PGD-20 at 8/255 left 53% robust through the soft layer and 32% through the
  identity);
- ``hard``: the real codec (rounded indices, 8-bit samples), whose gradient is zero almost
  everywhere; gradient attacks run through BPDA with the identity backward (the adaptive suite adds
  the soft layer's backward as a second stand-in: 54% vs 31% robust on the same model, so identity
  goes first);
- and both with transfer from the same network without its JPEG layer (the "twin").

The BPDA substitution is made at the JPEG layer, not around the whole model, so the network's own
gradient is taken at the hard layer's real output.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .layer import JpegLayer, jpeg_layers


class BackwardSubstitute(nn.Module):
    """out = s(x) + (f(x) − s(x)).detach(): the value of ``forward_layer``, the gradient of
    ``backward_layer`` (the identity when None)."""

    def __init__(self, forward_layer: nn.Module, backward_layer: nn.Module | None = None) -> None:
        super().__init__()
        self.forward_layer = forward_layer
        self.backward_layer = backward_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            real = self.forward_layer(x)
        stand_in = self.backward_layer(x) if self.backward_layer is not None else x
        return stand_in + (real - stand_in).detach()


def is_jpegdl(model: nn.Module) -> bool:
    return isinstance(getattr(model, "input_layer", None), JpegLayer)


def _with_input_layer(model: nn.Module, layer: nn.Module | None) -> nn.Module:
    twin = copy.copy(model)  # shares the network's parameters; only the input layer differs
    twin._modules = dict(model._modules)
    twin._modules["input_layer"] = layer
    return twin


def hard_layer(model: nn.Module) -> JpegLayer:
    layer = copy.deepcopy(model.input_layer)
    return layer.set_mode("hard")


def soft_layer(model: nn.Module) -> JpegLayer:
    layer = copy.deepcopy(model.input_layer)
    return layer.set_mode("soft")


def hard_model(model: nn.Module) -> nn.Module:
    """The model with the real (hard) codec: what a deployment with JPEG files computes."""
    return _with_input_layer(model, hard_layer(model))


def hard_model_bpda(model: nn.Module, backward: str = "soft") -> nn.Module:
    """Outputs exactly those of :func:`hard_model`; gradients through the soft layer or identity."""
    stand_in = soft_layer(model) if backward == "soft" else None
    return _with_input_layer(model, BackwardSubstitute(hard_layer(model), stand_in))


def soft_model_bpda(model: nn.Module) -> nn.Module:
    """Outputs those of the soft model; the JPEG layer differentiated as the identity."""
    return _with_input_layer(model, BackwardSubstitute(soft_layer(model), None))


def transfer_source(model: nn.Module, jpeg_gradient: str = "identity") -> tuple[nn.Module, str]:
    """What transfer examples are crafted on, and how it is differentiated ("model" or "bpda-identity").

    A JPEG-DL source is differentiated with its JPEG layer as the identity (BPDA) unless
    ``jpeg_gradient="soft"``: the soft quantizer's gradients mislead, and MI-FGSM examples made
    through it transferred 2-3x less often (quickstart's jpegdl_resnet8 to the KD student, 8/255:
    15.6% vs 49.6%)."""
    if is_jpegdl(model) and jpeg_gradient == "identity":
        return soft_model_bpda(model), "bpda-identity"
    return model, "model"


def soft_model(model: nn.Module) -> nn.Module:
    return _with_input_layer(model, soft_layer(model))


def twin_without_jpeg(model: nn.Module) -> nn.Module:
    """The same network without its JPEG layer (a transfer surrogate)."""
    return _with_input_layer(model, None)


__all__ = ["BackwardSubstitute", "hard_model", "hard_model_bpda", "is_jpegdl", "jpeg_layers", "soft_model",
           "soft_model_bpda", "transfer_source", "twin_without_jpeg"]
