"""R2KD: correlation-distance losses, a pruned teacher copy and augmented copies of each batch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ..bounds import ranged
from .base import CommonOptions, Distiller, StepContext, rate_field, register_method, temperature_field, weight_field
from .functional import as_column, column_cosine, cutmix, cutout, mixup, row_cosine


@dataclass
class R2KDOptions(CommonOptions):
    temperature: float = temperature_field(4.0)
    value_weight: float = weight_field(2.0)
    rank_weight: float = weight_field(2.0)
    rank: Literal["hard", "soft", "none"] = "hard"  # hard: the released argsort ranks (no gradient)
    rank_smoothness: float = ranged(0.1, 0.0, 10.0, low_open=True)  # soft ranks: sigmoid width, in row stds
    ce_weight: float = weight_field(1.0)
    prune_rate: float = rate_field(0.1)  # L1-unstructured pruning of every conv and linear weight of the copy
    prune_weight: float = rate_field(0.7, one=True)  # z_t ← w·z_teacher + (1 − w)·z_pruned
    # released: the pruned copy is never put in eval mode, so its BatchNorm uses each batch's statistics
    pruned_batchnorm: Literal["train", "eval"] = "train"
    augment: Literal["cutmix", "mixup", "cutout", "none"] = "cutmix"
    cutmix_alpha: float = ranged(1.0, 0.0, 100.0, low_open=True)  # of Beta(α, α): α > 0
    mixup_alpha: float = ranged(0.2, 0.0, 100.0, low_open=True)
    cutout_size: int = ranged(16, 1, 512)  # the released script's cutout length


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 logits (autocast) in fp32; fp32 and fp64 as they are."""
    return logits if logits.dtype == torch.float64 else logits.float()


def hard_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..C of each row (argsort of argsort): no gradient."""
    return x.argsort(dim=1).argsort(dim=1).to(x.dtype) + 1.0


def soft_ranks(x: torch.Tensor, smoothness: float) -> torch.Tensor:
    """Differentiable ranks: r_i = 1 + Σ_{j≠i} σ((x_i − x_j)/s), s = smoothness·std(row).

    As s → 0 this tends to the hard ranks; each row costs C² (fine for C ≤ a few hundred).
    """
    scale = smoothness * x.std(dim=1, keepdim=True).clamp_min(1e-12)
    pairwise = torch.sigmoid((x[:, :, None] - x[:, None, :]) / scale[:, :, None])
    return pairwise.sum(dim=2) + 0.5  # the j = i term contributes σ(0) = 0.5


def rank_correlation_rows(ranks_a: torch.Tensor, ranks_b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row's ranks, as the released code computes it: ranks divided by
    C(C+1)/2, centred, then a·b / (‖a‖·‖b‖ + 1e-8) (the 1e-8 moves the value by ~1e-6 for C = 10)."""
    classes = ranks_a.shape[1]
    a, b = ranks_a / (classes * (classes + 1) / 2), ranks_b / (classes * (classes + 1) / 2)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register_method("r2kd", "correlation distances (value and rank) with a pruned teacher and CutMix copies")
class R2KD(Distiller):
    """Kim, Ham, Cho and Kim, "Robustness-Reinforced Knowledge Distillation with Correlation Distance
    and Network Pruning", IEEE TKDE 2024.

    Teacher logits mix in a copy pruned once (10% L1-unstructured per conv/linear weight, no
    fine-tuning): z_t ← 0.7·z_t + 0.3·z_pruned; as released, the copy's BatchNorm layers use the
    statistics of each batch (``pruned_batchnorm=train``; ``eval``: its running statistics).
    With P = softmax(Z/T), T = 4:
    L_val = w_v·T²·{[1 − mean_i |cos(P_s[i,:], P_t[i,:])|] + [1 − mean_j |cos(P_s[:,j], P_t[:,j])|]},
    L_rank = w_r·(1 − mean_i ρ_S(P_s[i,:], P_t[i,:])) with Spearman's ρ per sample, w_v = w_r = 2.
    The same two losses are added on an augmented copy of the batch (CutMix, α = 1, by default),
    without labels; L = CE + L_val + L_rank + L_val,aug + L_rank,aug.
    The released rank term uses argsort ranks and so has no gradient: ``rank=hard`` (the default)
    reproduces it; ``rank=soft`` (our option) gives the student differentiable soft ranks instead.
    """

    Options = R2KDOptions
    source = "Kim et al., IEEE TKDE 2024 (arXiv 2311.13934; github Seonghak35/R2KD)"
    supports_dtd = True

    def __init__(self, options: R2KDOptions) -> None:
        super().__init__(options)
        self.pruned: nn.Module | None = None

    def attach(self, teacher: nn.Module) -> None:
        """Make the pruned teacher copy (deterministic from the teacher's weights)."""
        convs = [m.weight for m in teacher.modules() if isinstance(m, nn.Conv2d)]
        channels_last = bool(convs) and not convs[0].is_contiguous() and convs[0].is_contiguous(
            memory_format=torch.channels_last)
        pruned = copy.deepcopy(teacher).eval().to(memory_format=torch.contiguous_format)  # prune needs plain layout
        if self.options.prune_rate > 0:
            for module in pruned.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    prune.l1_unstructured(module, "weight", amount=self.options.prune_rate)
                    prune.remove(module, "weight")
        if channels_last:
            pruned = pruned.to(memory_format=torch.channels_last)
        for parameter in pruned.parameters():
            parameter.requires_grad_(False)
        self.pruned = pruned.train(self.options.pruned_batchnorm == "train")  # released: batch statistics

    def teacher_forward(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        if self.pruned is None:
            raise RuntimeError("R2KD.attach(teacher) must run before training")
        w = self.options.prune_weight
        return w * _at_least_fp32(teacher(images)) + (1.0 - w) * _at_least_fp32(self.pruned(images))

    def teacher_is_cacheable(self) -> bool:
        """With batch statistics the pruned copy's logits depend on the batch: computed every step."""
        return self.options.pruned_batchnorm == "eval" or self.options.prune_weight == 1.0

    def correlation_terms(self, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.options
        temperature = self.temperature(student, teacher)
        t = as_column(temperature)
        p_s, p_t = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
        scale = temperature.mean() ** 2 if isinstance(temperature, torch.Tensor) else temperature**2
        value = o.value_weight * scale * (
            (1.0 - row_cosine(p_s, p_t).abs().mean()) + (1.0 - column_cosine(p_s, p_t).abs().mean())
        )
        if o.rank == "none":
            return value, student.new_zeros(())
        ranks_s = soft_ranks(p_s, o.rank_smoothness) if o.rank == "soft" else hard_ranks(p_s)
        rank = o.rank_weight * (1.0 - rank_correlation_rows(ranks_s, hard_ranks(p_t)).mean())
        return value, rank

    def calls_student_again(self) -> bool:
        return self.options.augment != "none"

    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor | None:
        o = self.options
        if o.augment == "cutmix":
            return cutmix(images, generator, o.cutmix_alpha)
        if o.augment == "mixup":
            return mixup(images, generator, o.mixup_alpha)
        if o.augment == "cutout":
            return cutout(images, generator, o.cutout_size)
        return None

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        value, rank = self.correlation_terms(student, teacher)
        terms = {"ce": self.options.ce_weight * F.cross_entropy(student, labels), "value": value, "rank": rank}
        augmented = self.augment(context.images, context.generator)
        if augmented is not None:
            value_aug, rank_aug = self.correlation_terms(context.student(augmented).float(), context.teacher(augmented))
            terms.update(value_aug=value_aug, rank_aug=rank_aug)
        return terms
