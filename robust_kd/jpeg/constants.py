"""The JPEG layer's fixed matrices (colour transform, DCT) on the device and dtype of its input.

They are module-level CPU tensors; converting them on every forward pass would be one host-to-device
copy each, a stream sync on CUDA, several times per training or attack step. Each conversion is
made once and kept (a few kilobytes per device and dtype). For module-level constants only: the
key is the constant's id, which must stay its own for the life of the process.
"""

from __future__ import annotations

import torch

_converted: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}


def like(constant: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``constant`` (never changed) on ``x``'s device, in ``x``'s dtype."""
    key = (id(constant), x.device, x.dtype)
    found = _converted.get(key)
    if found is None:
        # a copy made under inference_mode (a teacher's forward) would be an inference tensor, which
        # autograd refuses to save for a later backward (a student's)
        with torch.inference_mode(False):
            found = _converted[key] = constant.to(x.device, x.dtype).clone()
    return found
