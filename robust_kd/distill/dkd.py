"""Decoupled knowledge distillation (a strong logit baseline), optionally on standardised logits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bounds import ranged
from .base import CommonOptions, Distiller, StepContext, register_method, temperature_field, weight_field
from .functional import as_column, squared, standardize


@dataclass
class DKDOptions(CommonOptions):
    temperature: float = temperature_field(4.0)
    alpha: float = weight_field(1.0)  # TCKD weight
    beta: float = weight_field(8.0)  # NCKD weight (per pair in configs/methods/dkd.yaml)
    ce_weight: float = weight_field(1.0)
    warmup_epochs: float = ranged(20.0, 0.0)
    standardize: bool = False  # DKD+LS: z-score logits first (its per-pair T, α, β: configs/methods/dkd_ls.yaml)


def warmup_ramp(progress: float, warmup_epochs: float) -> float:
    """mdistiller's warm-up factor min(epoch / warmup, 1) with its 1-based epoch number, constant within an
    epoch: 1/20 through the first epoch, 1 from epoch 20 on (``progress`` counts epochs done, from 0)."""
    if warmup_epochs <= 0:
        return 1.0
    return min((math.floor(progress) + 1) / warmup_epochs, 1.0)


@register_method("dkd", "decoupled KD: target-class and non-target-class KL, weighted apart")
@register_method("dkd_ls", "DKD on z-scored logits (DKD + logit standardization)",
                 standardize=True, temperature=2.0, alpha=9.0, beta=72.0)
class DKD(Distiller):
    """Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation", CVPR 2022.

    With b = [p_y, 1 − p_y] (binary target/rest) and p̂ the distribution over the non-target
    classes, all at temperature T: TCKD = KL(b_t ‖ b_s), NCKD = KL(p̂_t ‖ p̂_s),
    L = w_ce·CE + min(epoch/warmup, 1)·T²·(α·TCKD + β·NCKD), the epoch counted from 1 as in mdistiller.
    CIFAR defaults T = 4, α = 1, β = 8 (2 or 6 for some pairs), warmup 20 epochs. ``standardize``
    applies logit standardization (Sun et al. 2024) first.
    """

    Options = DKDOptions
    source = "Zhao et al., CVPR 2022 (github megvii-research/mdistiller); DKD+LS: Sun et al., CVPR 2024"
    supports_dtd = True

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        zs, zt = (standardize(student), standardize(teacher)) if o.standardize else (student, teacher)
        temperature = self.temperature(zs, zt)
        t = as_column(temperature)
        target = F.one_hot(labels, zs.shape[1]).bool()
        # binary target / rest, in log space: log p_y and log(1 − p_y) = logsumexp over the rest
        log_ps, log_pt = F.log_softmax(zs / t, dim=1), F.log_softmax(zt / t, dim=1)
        binary_s = torch.stack([log_ps[target], torch.logsumexp(log_ps.masked_fill(target, -torch.inf), dim=1)], dim=1)
        binary_t = torch.stack([log_pt[target], torch.logsumexp(log_pt.masked_fill(target, -torch.inf), dim=1)], dim=1)
        tckd = (binary_t.exp() * (binary_t - binary_s)).sum(dim=1)
        # non-target distributions: softmax over the classes other than y
        rest_s = F.log_softmax((zs / t).masked_fill(target, -torch.inf), dim=1)
        rest_t = F.log_softmax((zt / t).masked_fill(target, -torch.inf), dim=1)
        nckd = (rest_t.exp() * (rest_t - rest_s).masked_fill(target, 0.0)).sum(dim=1)
        ramp = warmup_ramp(context.progress, o.warmup_epochs)
        scale = squared(temperature)
        return {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "tckd": ramp * o.alpha * (scale * tckd).mean(),
            "nckd": ramp * o.beta * (scale * nckd).mean(),
        }
