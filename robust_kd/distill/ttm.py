"""Transformed teacher matching (TTM) and its sample-weighted form (WTTM)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..bounds import ranged
from .base import MAX_TEMPERATURE, MIN_TEMPERATURE, CommonOptions, Distiller, StepContext, register_method, weight_field
from .functional import as_column


@dataclass
class TTMOptions(CommonOptions):
    # γ = 1/T: power transform of the teacher (per pair in configs/methods/*.yaml), T within the temperatures' range
    gamma: float = ranged(0.1, 1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE)
    beta: float = weight_field(100.0)  # weight of the matching term (TTM's resnet32x4→resnet8x4 value)
    ce_weight: float = weight_field(1.0)
    weighted: bool = False  # WTTM: weight each sample by U_γ(p_t) = Σ_j p_j^γ


@register_method("ttm", "transformed teacher matching: temperature on the teacher only")
@register_method("wttm", "TTM weighted per sample by the teacher's power sum", weighted=True, beta=3.0)
class TTM(Distiller):
    """Zheng and Yang, "Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024.

    The teacher is power-transformed, p̂ = p_t^γ / Σ p_t^γ = softmax(γ·z_t) (γ = 1/T); the student is
    not tempered: L = w_ce·CE(y, q) + β·mean_i w_i·KL(p̂_i ‖ q_i) with q = softmax(z_s), and no T².
    TTM has w_i = 1; WTTM has w_i = U_γ(p_t,i) = Σ_j p_t,ij^γ on the untransformed teacher
    probabilities (1 for a one-hot teacher up to K^(1−γ) for a uniform one), computed in log space
    and carrying no gradient. Per-pair γ, β from the paper's App. A.4 are in configs/methods/.
    """

    Options = TTMOptions
    source = "Zheng & Yang, ICLR 2024 (github zkxufo/TTM), Tables 8-10 for γ and β"
    supports_dtd = True
    base_temperature_option = None

    def base_temperature(self) -> float:
        return 1.0 / self.options.gamma

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
             context: StepContext) -> dict[str, torch.Tensor]:
        o = self.options
        gamma = 1.0 / as_column(self.temperature(student, teacher))  # per sample under DTD
        log_q = F.log_softmax(student, dim=1)
        log_p_hat = F.log_softmax(gamma * teacher, dim=1)
        kl = (log_p_hat.exp() * (log_p_hat - log_q)).sum(dim=1)
        terms = {"ce": o.ce_weight * F.cross_entropy(student, labels)}
        if o.weighted:
            with torch.no_grad():  # log U = logsumexp(γ z) − γ·logsumexp(z)
                # a Python γ stays a number: new_tensor(γ) would be a host-to-device copy on every step
                gamma_row = gamma.reshape(-1) if isinstance(gamma, torch.Tensor) else gamma
                log_u = torch.logsumexp(gamma * teacher, dim=1) - gamma_row * torch.logsumexp(teacher, dim=1)
            terms["wttm"] = o.beta * (log_u.exp() * kl).mean()
        else:
            terms["ttm"] = o.beta * kl.mean()
        return terms
