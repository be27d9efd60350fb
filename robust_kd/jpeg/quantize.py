"""Quantizers for DCT coefficients: the differentiable soft quantizer of JPEG-DL and plain rounding.

Soft quantizer (Salamah et al., ICLR 2025, Eq. 3–4, in the windowed form of their code): for a
coefficient z and step q, take the L integer indices nearest to z/q, weight each reconstruction
point i·q by softmax over the window of −α·(i·q − z)², and return the weighted mean. As α·q² grows
it tends to hard rounding; gradients reach z and q (through the points and through the weights).
Indices are detached and clipped to the signed ``bits``-bit range.
"""

from __future__ import annotations

import torch


def index_range(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1


def hard_quantize(z: torch.Tensor, q: torch.Tensor, bits: int) -> torch.Tensor:
    """round(z/q)·q with the index clipped to the ``bits`` range: what a JPEG encoder/decoder does."""
    low, high = index_range(bits)
    return torch.round(z / q).clamp(low, high) * q


def soft_quantize(z: torch.Tensor, q: torch.Tensor, alpha: float, window: int, bits: int) -> torch.Tensor:
    """E[i·q | z] under P(i | z) ∝ exp(−α (z − i·q)²) over a window of ``window`` indices.

    Computed in index units: with r = z/q, the window's first index k and t = r − k, the
    candidates are k + j (j = 0..window−1) and α(z − (k+j)q)² = αq²(j − t)², so the output is
    q·(k + E[j]). Each candidate is one full-size tensor (no trailing window dimension), which
    keeps every operation a plain elementwise one; the value and gradients are those of the
    direct formula (a test checks this against it).
    """
    low, high = index_range(bits)
    r = z / q
    with torch.no_grad():
        first = (torch.round(r) - window // 2).clamp(low, high - window + 1)
    t = r - first
    hardness = alpha * q.square()
    logits = [-hardness * (j - t).square() for j in range(window)]
    peak = logits[0]
    for logit in logits[1:]:
        peak = torch.maximum(peak, logit)
    peak = peak.detach()  # any constant works; detaching keeps the graph small
    weights = [torch.exp(logit - peak) for logit in logits]
    total = weights[0]
    expected = torch.zeros_like(total)
    for j, weight in enumerate(weights[1:], start=1):
        total = total + weight
        expected = expected + j * weight
    return q * (first + expected / total)
