"""Pieces shared by the benchmarks: a bare training loop and device helpers."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import ContextManager

import torch
import torch.nn.functional as F
from torch import nn

import attacks
from robust_kd.device import autocast, uses_channels_last

FLOAT32_WORDS = {"ieee": "float32 in IEEE arithmetic (TF32 off on CUDA, as the verdicts of attacks.evaluate)",
                 "tf32": "float32 as torch defaults to (TF32 convolutions on CUDA)"}


def add_float32_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--float32", choices=sorted(FLOAT32_WORDS), default="ieee",
                        help="the arithmetic of float32 passes on CUDA for ours and the reference alike (ieee: TF32 "
                             "off, so that examples and verdicts can be compared; tf32: cuDNN's default). "
                             "No difference on a CPU.")


def float32_mode(choice: str) -> ContextManager[object]:
    """The float32 arithmetic a benchmark compares in (``--float32``), for ours and the reference alike."""
    return attacks.full_float32() if choice == "ieee" else contextlib.nullcontext()


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
