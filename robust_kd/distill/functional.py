"""Small pieces of math shared by the distillation methods. Logits are fp32, B×C.

A temperature ``T`` is a float or a B×1 tensor (one temperature per sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def as_column(temperature: float | torch.Tensor) -> float | torch.Tensor:
    if isinstance(temperature, torch.Tensor) and temperature.dim() == 1:
        return temperature[:, None]
    return temperature


def squared(temperature: float | torch.Tensor) -> float | torch.Tensor:
    """T² per sample (B) or as a number."""
    if isinstance(temperature, torch.Tensor):
        return temperature.reshape(-1).square()
    return temperature * temperature


def kl_per_sample(student: torch.Tensor, teacher: torch.Tensor,
                  temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """KL(softmax(z_t/T) ‖ softmax(z_s/T)) for each sample, from log-probabilities (stable)."""
    t = as_column(temperature)
    log_p_teacher = F.log_softmax(teacher / t, dim=1)
    log_p_student = F.log_softmax(student / t, dim=1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)


def scaled_kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Hinton's distillation term: mean over the batch of T²·KL (``batchmean`` with the T² factor)."""
    return (squared(temperature) * kl_per_sample(student, teacher, temperature)).mean()


def _cosine(a: torch.Tensor, b: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """a·b / (‖a‖·‖b‖ + eps), the form of the released R2KD and CSKD code (the eps on the product; for
    a column of small probabilities it is not negligible, so it matters for agreeing with them)."""
    return (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


def column_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each class column (over the batch): C values."""
    return _cosine(a, b, 0, eps)


def row_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each sample's row (over the classes): B values."""
    return _cosine(a, b, 1, eps)


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each logit vector with the unbiased std (logit standardization, Sun et al. 2024)."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + eps)


def energy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Energy score E = −T·log Σ_c exp(z_c/T) per sample (low: confident, high: uncertain)."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


@dataclass(frozen=True)
class CutMixDraw:
    """The random draws of one CutMix: λ, the partner of each image, the box centre (row, column)."""

    lam: float
    partner: torch.Tensor
    centre: tuple[int, int]


def draw_cutmix(batch: int, height: int, width: int, generator: torch.Generator, alpha: float = 1.0) -> CutMixDraw:
    """Draws in the reference CutMix's order: λ ~ Beta(α, α), the permutation, the row, the column."""
    lam = _beta(alpha, generator)
    partner = torch.randperm(batch, generator=generator)
    row = int(torch.randint(height, (1,), generator=generator))
    column = int(torch.randint(width, (1,), generator=generator))
    return CutMixDraw(lam, partner, (row, column))


def apply_cutmix(images: torch.Tensor, draw: CutMixDraw) -> torch.Tensor:
    """Paste the box from each image's partner: sides ⌊size·√(1 − λ)⌋, centre ± side//2 clipped to the
    image (the reference's box, one pixel short for an odd side)."""
    _, _, height, width = images.shape
    cut = (1.0 - draw.lam) ** 0.5
    box_h, box_w = int(height * cut), int(width * cut)
    cy, cx = draw.centre
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    mixed = images.clone()
    partner = draw.partner.to(images.device)
    mixed[:, :, top:bottom, left:right] = images[partner, :, top:bottom, left:right]
    return mixed


def cutmix(images: torch.Tensor, generator: torch.Generator, alpha: float = 1.0) -> torch.Tensor:
    """CutMix inside the batch: paste a box from a permuted partner into each image.

    λ ~ Beta(α, α) sets the box area (1 − λ of the image); labels are not needed by the methods
    that use it (their losses compare student and teacher on the mixed images).
    """
    batch, _, height, width = images.shape
    return apply_cutmix(images, draw_cutmix(batch, height, width, generator, alpha))


def mixup(images: torch.Tensor, generator: torch.Generator, alpha: float = 0.2) -> torch.Tensor:
    lam = _beta(alpha, generator)
    partner = torch.randperm(images.shape[0], generator=generator).to(images.device)
    return lam * images + (1.0 - lam) * images[partner]


def cutout(images: torch.Tensor, generator: torch.Generator, size: int = 8) -> torch.Tensor:
    """One square hole of ``size`` pixels per image, at a random centre (DeVries & Taylor)."""
    batch, _, height, width = images.shape
    cy = torch.randint(height, (batch,), generator=generator).to(images.device)
    cx = torch.randint(width, (batch,), generator=generator).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :]
    cols = torch.arange(width, device=images.device)[None, :]
    inside_rows = (rows >= (cy[:, None] - size // 2)) & (rows < (cy[:, None] + size - size // 2))
    inside_cols = (cols >= (cx[:, None] - size // 2)) & (cols < (cx[:, None] + size - size // 2))
    hole = inside_rows[:, :, None] & inside_cols[:, None, :]
    return images * (~hole)[:, None].to(images.dtype)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """A Beta(α, α) draw from ``generator`` (torch.distributions takes no generator)."""
    x, y = _gamma(alpha, generator), _gamma(alpha, generator)
    return x / (x + y)


def _gamma(alpha: float, generator: torch.Generator) -> float:
    """A Gamma(α, 1) draw (Marsaglia and Tsang's method; α < 1 through the usual boost)."""
    if alpha < 1.0:
        u = float(torch.rand((), generator=generator))
        return _gamma(alpha + 1.0, generator) * u ** (1.0 / alpha)
    d = alpha - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        x = float(torch.randn((), generator=generator))
        v = (1.0 + c * x) ** 3
        if v <= 0:
            continue
        u = float(torch.rand((), generator=generator))
        if u < 1.0 - 0.0331 * x**4 or math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v
