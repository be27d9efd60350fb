"""Energy KD (per-sample temperatures from the teacher's energy) and HE-DA."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..errors import UserError
from .base import (
    CommonOptions, DistillSetup, Distiller, StepContext, rate_field, register_method, temperature_field, weight_field,
)
from .functional import cutmix, energy, mixup, scaled_kd


@dataclass
class EnergyOptions(CommonOptions):
    energy_temperature: float = temperature_field(4.0)  # T_E of the energy score E = −T_E·log Σ exp(z_t/T_E)
    low_rate: float = rate_field(0.2)  # share of training samples called low-energy (confident)
    high_rate: float = rate_field(0.2)  # share called high-energy (uncertain)
    temperatures: list[float] = temperature_field([2.0, 4.0, 6.0])  # [sharp, mid, smooth]
    direction: Literal["paper", "code"] = "paper"
    ce_weight: float = weight_field(0.1)
    kd_weight: float = weight_field(0.9)
    # HE-DA (method 'heda'): an extra KD term on mixed copies of the high-energy samples
    augment: Literal["none", "cutmix", "mixup"] = "none"
    augment_high_rate: float = rate_field(0.5)
    augment_low_rate: float = rate_field(0.0)
    augment_temperature: float = temperature_field(4.0)
    augment_weight: float = weight_field(0.9)


def _thresholds(sorted_energies: torch.Tensor, low_rate: float, high_rate: float) -> tuple[float, float]:
    """Energy KD's code: e_low = E[⌊N·low⌋], e_high = E[−(⌊N·high⌋ + 1)] of the ascending energies."""
    n = sorted_energies.numel()
    low = float(sorted_energies[min(int(math.floor(n * low_rate)), n - 1)])
    high = float(sorted_energies[-(int(math.floor(n * high_rate)) + 1)])
    return low, high


@register_method("energy_kd", "KD with per-sample temperatures chosen by the teacher's energy score")
@register_method("heda", "Energy KD plus HE-DA: KD on CutMix copies of the high-energy samples", augment="cutmix")
class EnergyKD(Distiller):
    """Kim, Ham, Lee, Jang and Kim, "Maximizing discrimination capability of knowledge distillation
    with energy function", Knowledge-Based Systems 296:111911 (2024).

    E(x) = −T_E·log Σ_c exp(z_t,c/T_E) with T_E = 4. Before training the teacher scores every
    augmented training batch; thresholds are the low_rate and high_rate quantiles of those energies.
    Each sample then gets T_i from ``temperatures`` = [sharp, mid, smooth] = [2, 4, 6]:
    ``direction=paper`` (the abstract) gives low-energy (confident) samples the smooth 6 and
    high-energy ones the sharp 2; ``direction=code`` (the released code) does the opposite.
    L = w_ce·CE + w_kd·mean_i T_i²·KL_i(T_i).

    HE-DA (``augment=cutmix|mixup``): the samples with energy above the ``augment_high_rate``
    threshold (and below the ``augment_low_rate`` one, if positive) are mixed among themselves
    and add w_aug·T²·KL at T = 4 between student and teacher on the mixed images (no labels).
    The released code pads that sub-batch with the batch's first two images so it is never
    empty; we skip the term when no sample qualifies instead.
    """

    Options = EnergyOptions
    source = "Kim et al., KBS 2024 (arXiv 2311.14334; github Seonghak35/EnergyKD)"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        o = options
        if len(o.temperatures) != 3:        # each one's range is declared (and checked) with the options
            raise UserError("distill.options.temperatures must be three positive numbers [sharp, mid, smooth], got "
                            f"{len(o.temperatures)}")
        self.thresholds: tuple[float, float] | None = None
        self.augment_thresholds: tuple[float, float] | None = None

    def prepare(self, setup: DistillSetup) -> None:
        """Score the teacher's energy on every augmented training batch (last partial one dropped)."""
        energies = []
        loader = setup.train_batches
        full = (loader.num_samples // loader.batch_size) * loader.batch_size or loader.num_samples
        seen = 0
        for batch in loader.batches(epoch=0):
            if seen >= full:
                break
            energies.append(energy(setup.teacher(batch.images), self.options.energy_temperature).cpu())
            seen += batch.images.shape[0]
        ordered = torch.cat(energies).sort().values
        self.thresholds = _thresholds(ordered, self.options.low_rate, self.options.high_rate)
        self.augment_thresholds = _thresholds(ordered, self.options.augment_low_rate, self.options.augment_high_rate)

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds, "augment_thresholds": self.augment_thresholds}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.thresholds = tuple(state["thresholds"])  # type: ignore[assignment]
        self.augment_thresholds = tuple(state["augment_thresholds"])  # type: ignore[assignment]

    def sample_temperatures(self, teacher: torch.Tensor) -> torch.Tensor:
        if self.thresholds is None:
            raise RuntimeError("EnergyKD.prepare() must run before training")
        sharp, mid, smooth = self.options.temperatures
        low_t, high_t = (smooth, sharp) if self.options.direction == "paper" else (sharp, smooth)
        scores = energy(teacher, self.options.energy_temperature)
        # torch.where, not boolean-mask writes: each of those is a nonzero, a host sync on CUDA
        temperatures = torch.where(scores < self.thresholds[0], low_t, torch.full_like(scores, mid))
        return torch.where(scores > self.thresholds[1], high_t, temperatures)

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        terms = {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "kd": o.kd_weight * scaled_kd(student, teacher, self.sample_temperatures(teacher)),
        }
        if o.augment != "none":
            terms["kd_aug"] = self._augmented_term(teacher, context)
        return terms

    def calls_student_again(self) -> bool:
        return self.options.augment != "none"

    def _augmented_term(self, teacher: torch.Tensor, context: StepContext) -> torch.Tensor:
        o = self.options
        assert self.augment_thresholds is not None
        scores = energy(teacher, o.energy_temperature)
        chosen = scores > self.augment_thresholds[1]
        if o.augment_low_rate > 0:
            chosen |= scores < self.augment_thresholds[0]
        rows = chosen.nonzero(as_tuple=True)[0]    # the one host sync of the term: its batch has this size
        if rows.numel() < 2:  # nothing to mix
            return teacher.new_zeros(())
        images = context.images[rows]
        mixed = cutmix(images, context.generator) if o.augment == "cutmix" else mixup(images, context.generator)
        student_mixed = context.student(mixed).float()
        teacher_mixed = context.teacher(mixed)
        return o.augment_weight * scaled_kd(student_mixed, teacher_mixed, o.augment_temperature)
