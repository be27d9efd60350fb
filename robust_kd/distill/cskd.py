"""Cosine-similarity KD over batch predictions, with cosine-similarity weighted temperature."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import CommonOptions, Distiller, StepContext, register_method, temperature_field, weight_field
from .functional import as_column, column_cosine, row_cosine


@dataclass
class CSKDOptions(CommonOptions):
    temperature: float = temperature_field(4.0)
    alpha: float = weight_field(2.0)  # scale of each cosine term
    kd_weight: float = weight_field(1.0)  # λ, the single balancing factor of the paper's Eq. 9
    ce_weight: float = weight_field(1.0)
    cswt: bool = False  # add the cosine-similarity weighted temperature term
    cswt_low: float = temperature_field(2.0)  # temperature of the sample most similar to its teacher
    cswt_high: float = temperature_field(6.0)  # … and of the least similar one


@register_method("cskd", "cosine similarity between student and teacher batch predictions per class")
@register_method("cswt", "CSKD plus the cosine-similarity weighted temperature term (the full method)", cswt=True)
class CSKD(Distiller):
    """Ham, Kim, Lee, Lee and Kim, "Cosine Similarity Knowledge Distillation for Individual Class
    Information Transfer", arXiv:2311.14307.

    P = softmax(Z/T) row-wise (B×C). For each class j the column P[:, j] holds that class's
    probabilities over the batch ("batch predictions"):
    L_cs = α·T²·[1 − (1/C)·Σ_j cos(P_s[:, j], P_t[:, j])].
    CSWT: c_i = cos(softmax(z_s,i), softmax(z_t,i)) (T = 1, detached),
    T_i = T_low + (T_high − T_low)·(max c − c_i)/(max c − min c), each row softened with its T_i,
    L_cswt = α·mean(T_i)²·[1 − (1/C)·Σ_j cos(P_s^(T_i)[:, j], P_t^(T_i)[:, j])].
    L = w_ce·CE + λ·(L_cs + L_cswt). Defaults α = 2, T = 4, T_low = 2, T_high = 6, λ = 1 come from
    the only implementation found (third-party, llieeai/lud); its MLKD extras are not included.
    The loss depends on the batch size (the columns have B entries): compare at batch 64.
    """

    Options = CSKDOptions
    source = "Ham et al., arXiv 2311.14307 (ICLR 2024 submission); formulas from github llieeai/lud"
    supports_dtd = True

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        temperature = self.temperature(student, teacher)
        t = as_column(temperature)
        p_s, p_t = F.softmax(student / t, dim=1), F.softmax(teacher / t, dim=1)
        scale = temperature.mean() ** 2 if isinstance(temperature, torch.Tensor) else temperature**2
        terms = {
            "ce": o.ce_weight * F.cross_entropy(student, labels),
            "cs": o.kd_weight * o.alpha * scale * (1.0 - column_cosine(p_s, p_t).mean()),
        }
        if o.cswt:
            per_sample = self.cswt_temperatures(student, teacher)
            t_i = per_sample[:, None]
            q_s, q_t = F.softmax(student / t_i, dim=1), F.softmax(teacher / t_i, dim=1)
            terms["cswt"] = o.kd_weight * o.alpha * per_sample.mean() ** 2 * (1.0 - column_cosine(q_s, q_t).mean())
        return terms

    @torch.no_grad()
    def cswt_temperatures(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """T_i from T_low (most similar sample of the batch) to T_high (least similar); detached."""
        o = self.options
        similarity = row_cosine(F.softmax(student, dim=1), F.softmax(teacher, dim=1))
        spread = (similarity.max() - similarity.min()).clamp_min(1e-8)
        return o.cswt_low + (o.cswt_high - o.cswt_low) * (similarity.max() - similarity) / spread
