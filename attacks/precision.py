"""The precision an evaluation's attacks compute in.

``fp32`` (the default) is the reference tools' precision. ``bf16`` runs every attack's forward and
backward passes under bfloat16 autocast, which is 2-3× faster per pass where the hardware has
bf16 matrix units (CUDA GPUs from Ampere on; CPUs with AVX512-BF16 or AMX). The verdicts stay
float32: :func:`attacks.evaluate` decides the clean accuracy and whether each adversarial example
is misclassified with the model itself, so a point counts as broken only when float32 agrees. What
bf16 can change is which examples the attacks find: its gradients and the losses the attacks
compare are rounded to 8 bits of mantissa. The convergence check therefore runs in float32 in a
bf16 evaluation, on up to 32 points the suite left robust: its ``not_converged`` flag fires when a
float32 attack breaks enough of them to move the robust accuracy by more than half a point.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from .errors import AttackError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise AttackError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    return precision


class Autocast(nn.Module):
    """``module`` run under autocast to ``dtype``, giving float32 logits (the losses stay float32)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.module(x)
        return out.float()


def in_precision(module: nn.Module, precision: str) -> nn.Module:
    """``module`` as the attacks of a ``precision`` evaluation see it."""
    dtype = PRECISIONS[check_precision(precision)]
    return module if dtype is None else Autocast(module, dtype)


def like(module: nn.Module, seen: nn.Module) -> nn.Module:
    """``module`` in the precision ``seen`` computes in: an attack that makes its examples on other
    models than the one it is given (transfer's surrogates) runs them as the evaluation runs that one."""
    return Autocast(module, seen.dtype) if isinstance(seen, Autocast) else module


def _precision_flags() -> list[Any]:
    """The float32 precision settings of cuDNN convolutions and CUDA matmuls (torch's new TF32 API)."""
    backends = [getattr(torch.backends.cudnn, "conv", None), getattr(torch.backends.cuda, "matmul", None)]
    return [b for b in backends if b is not None and hasattr(b, "fp32_precision")]


_LEGACY_TF32 = [(torch.backends.cudnn, "allow_tf32"), (torch.backends.cuda.matmul, "allow_tf32")]


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """float32 convolutions and matmuls at full precision inside, on CUDA too.

    cuDNN runs float32 convolutions in TF32 by default (a 10-bit mantissa). That alone moves a
    model's logits and its folded copy's apart by about 2e-4 of their scale, though both compute the
    same function: the fold's probe and every verdict run at full precision.
    Torch versions without the ``fp32_precision`` settings get the older ``allow_tf32`` switches."""
    flags = _precision_flags()
    if flags:
        settings = [(flag, "fp32_precision", "ieee") for flag in flags]
    else:
        settings = [(owner, name, False) for owner, name in _LEGACY_TF32 if hasattr(owner, name)]
    before = [getattr(owner, name) for owner, name, _ in settings]
    try:
        for owner, name, value in settings:
            setattr(owner, name, value)
        yield
    finally:
        for (owner, name, _), value in zip(settings, before):
            setattr(owner, name, value)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def slow_here(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` would be slower than float32 on ``device``, or None."""
    if PRECISIONS[check_precision(precision)] is None:
        return None
    if device.type == "cuda":
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16 support: bf16 attacks run slower than fp32 here; use --precision fp32"
        return None
    if device.type == "cpu":
        flags = _cpu_flags()
        if flags and not flags & {"avx512_bf16", "amx_bf16"}:
            return ("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 attacks run slower than fp32 "
                    "here; use --precision fp32")
    return None
