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
    energy_temperatures: bool = True  # per-sample T by energy (Energy KD); false: one T for all (HE-DA as released)
    temperature: float = temperature_field(4.0)  # the one T when energy_temperatures is false
    low_rate: float = rate_field(0.2)  # share of training samples called low-energy (confident)
    high_rate: float = rate_field(0.2)  # share called high-energy (uncertain)
    temperatures: list[float] = temperature_field([2.0, 4.0, 6.0])  # [sharp, mid, smooth]
    direction: Literal["code", "paper"] = "code"
    ce_weight: float = weight_field(0.1)
    kd_weight: float = weight_field(0.9)
    # HE-DA: an extra KD term on CutMix copies of the samples outside the augment thresholds
    augment: Literal["none", "cutmix", "mixup"] = "none"
    augment_high_rate: float = rate_field(0.5)
    augment_low_rate: float = rate_field(0.0)
    augment_lead_images: bool = True  # the released mixed batch always starts with the batch's first two images
    augment_temperature: float = temperature_field(4.0)
    augment_weight: float = weight_field(0.9)


def _thresholds(sorted_energies: torch.Tensor, low_rate: float, high_rate: float) -> tuple[float, float]:
    """Energy KD's code: e_low = E[⌊N·low⌋], e_high = E[−(⌊N·high⌋ + 1)] of the ascending energies."""
    n = sorted_energies.numel()
    low = float(sorted_energies[min(int(math.floor(n * low_rate)), n - 1)])
    high = float(sorted_energies[-(int(math.floor(n * high_rate)) + 1)])
    return low, high


@register_method("energy_kd", "KD with per-sample temperatures chosen by the teacher's energy score")
@register_method("heda", "KD plus HE-DA: KD on CutMix copies of the high-energy samples", augment="cutmix",
                 energy_temperatures=False)
class EnergyKD(Distiller):
    """Kim, Ham, Lee, Jang and Kim, "Maximizing discrimination capability of knowledge distillation
    with energy function", Knowledge-Based Systems 296:111911 (2024).

    E(x) = −T_E·log Σ_c exp(z_t,c/T_E) with T_E = 4. Before training the teacher scores every
    augmented training batch; thresholds are the low_rate and high_rate quantiles of those energies.
    Each sample then gets T_i from ``temperatures`` = [sharp, mid, smooth] = [2, 4, 6]:
    ``direction=code`` (the released code and checkpoints, whose numbers were published) gives
    low-energy (confident) samples the sharp 2 and high-energy ones the smooth 6;
    ``direction=paper`` (the abstract's wording) does the opposite. L = w_ce·CE + w_kd·mean_i T_i²·KL_i(T_i).

    HE-DA (``heda``, as released): plain KD at one T = 4 (``energy_temperatures=false``) plus
    w_aug·T²·KL at T = 4 between student and teacher on CutMix copies (no labels) of the samples
    with energy above the ``augment_high_rate`` threshold or below the ``augment_low_rate`` one. The
    released mixed batch always starts with the batch's first two images (``augment_lead_images``).
    (Its code also drops a chosen image whose normalised pixels sum to exactly 0, a side effect of
    how it gathers them that real images do not meet; on our [0, 1] pixels the same test would drop
    black images, so it is left out.) ``heda`` with ``energy_temperatures=true`` stacks the
    augmentation on Energy KD's per-sample temperatures.
    """

    Options = EnergyOptions
    source = "Kim et al., KBS 2024 (arXiv 2311.14334; github Seonghak35/EnergyKD)"

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        o = options
        if len(o.temperatures) != 3:        # each one's range is declared (and checked) with the options
            raise UserError("distill.options.temperatures must be three positive numbers [sharp, mid, smooth], got "
                            f"{len(o.temperatures)}")
        if o.ka == "lsr" and o.energy_temperatures:
            raise UserError("ka=lsr smooths a wrong teacher's target at one base temperature, but "
                            "energy_temperatures=true gives each sample its own: use ka=ps, or "
                            "distill.options.energy_temperatures=false")
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
        temperature = self.sample_temperatures(teacher) if o.energy_temperatures else o.temperature
        terms = {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "kd": o.kd_weight * scaled_kd(student, teacher, temperature),
        }
        if o.augment != "none":
            terms["kd_aug"] = self._augmented_term(teacher, context)
        return terms

    def calls_student_again(self) -> bool:
        return self.options.augment != "none"

    def augment_rows(self, teacher: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The batch rows HE-DA mixes, in the released order: the first two images, then the chosen ones."""
        o = self.options
        if self.augment_thresholds is None:
            raise RuntimeError("EnergyKD.prepare() must run before training")
        low, high = self.augment_thresholds
        scores = energy(teacher, o.energy_temperature)
        chosen = (scores > high) | (scores < low)
        rows = chosen.nonzero(as_tuple=True)[0]    # the one host sync of the term: its batch has this size
        if o.augment_lead_images:
            rows = torch.cat([torch.arange(min(2, images.shape[0]), device=rows.device), rows])
        return rows

    def _augmented_term(self, teacher: torch.Tensor, context: StepContext) -> torch.Tensor:
        o = self.options
        rows = self.augment_rows(teacher, context.images)
        if rows.numel() < 2:  # nothing to mix
            return teacher.new_zeros(())
        images = context.images[rows]
        mixed = cutmix(images, context.generator) if o.augment == "cutmix" else mixup(images, context.generator)
        student_mixed = context.student(mixed).float()
        teacher_mixed = context.teacher(mixed)
        return o.augment_weight * scaled_kd(student_mixed, teacher_mixed, o.augment_temperature)
