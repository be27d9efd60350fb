"""Hinton KD and logit-standardised KD."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import CommonOptions, Distiller, StepContext, register_method, temperature_field, weight_field
from .functional import scaled_kd, standardize


@dataclass
class KDOptions(CommonOptions):
    temperature: float = temperature_field(4.0)
    ce_weight: float = weight_field(0.1)
    kd_weight: float = weight_field(0.9)


@register_method("kd", "Hinton KD: softened teacher probabilities, T²-scaled KL")
@register_method("ka", "KD with knowledge adjustment (probability shift) of wrong teacher predictions", ka="ps")
@register_method("dtd", "KD with dynamic per-sample temperature (FLSW weights)", dtd=True)
class KD(Distiller):
    """Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015).

    L = w_ce·CE(y, softmax(z_s)) + w_kd·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), batch mean, in fp32.
    Defaults are the CIFAR-100 benchmark's (RepDistiller, mdistiller): T = 4, w_ce = 0.1, w_kd = 0.9.
    With ``dtd`` T becomes one temperature per sample and T² is taken per sample.
    """

    Options = KDOptions
    source = "Hinton et al., arXiv:1503.02531 (2015); defaults: RepDistiller / mdistiller CIFAR-100"
    supports_dtd = True

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        temperature = self.temperature(student, teacher)
        return {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "kd": o.kd_weight * scaled_kd(student, teacher, temperature),
        }


@dataclass
class LogitStandardizationOptions(CommonOptions):
    temperature: float = temperature_field(2.0)
    ce_weight: float = weight_field(0.1)
    kd_weight: float = weight_field(9.0)


@register_method("ls", "KD on z-scored logits (logit standardization)")
class LogitStandardizedKD(Distiller):
    """Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge Distillation", CVPR 2024.

    Z(z) = (z − mean(z)) / (std(z) + 1e-7) (unbiased std) for teacher and student, then
    L = w_ce·CE + w_kd·τ²·KL(softmax(Z(z_t)/τ) ‖ softmax(Z(z_s)/τ)); defaults τ = 2, 0.1, 9 (their
    CIFAR-100 KD+LS). The gradient flows through the student's standard deviation, as intended.
    """

    Options = LogitStandardizationOptions
    source = "Sun et al., CVPR 2024 (github sunshangquan/logit-standardization-KD)"
    supports_dtd = True

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        zs, zt = standardize(student), standardize(teacher)
        temperature = self.temperature(zs, zt)
        return {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "kd": o.kd_weight * scaled_kd(zs, zt, temperature),
        }
