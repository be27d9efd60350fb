"""Pieces shared by the benchmarks: a bare training loop and device helpers."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from robust_kd.device import autocast, uses_channels_last


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop_images_per_s(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int,
                           device: torch.device) -> float:
    """SGD steps over float images already on ``device``: one warm-up pass, then one timed pass."""
    memory_format = torch.channels_last if uses_channels_last(device) else torch.contiguous_format
    model = model.to(device).to(memory_format=memory_format).train()
    images = images.to(device).contiguous(memory_format=memory_format)
    batches = list(zip(images.split(batch), labels.to(device).split(batch)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)

    def one_pass() -> None:
        for x, y in batches:
            with autocast(device):
                loss = F.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    one_pass()  # warm-up: kernel selection, allocator
    sync(device)
    started = time.perf_counter()
    one_pass()
    sync(device)
    return images.shape[0] / (time.perf_counter() - started)
