"""Device choice and the precision settings that go with it."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch

from .errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if visible, else the CPU. Under torchrun, ``auto`` and ``cuda`` mean this
    process's own GPU (cuda:LOCAL_RANK)."""
    from .distributed import launched_by_torchrun, local_rank

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched_by_torchrun() and torch.cuda.is_available():
        name = f"cuda:{local_rank()}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and launched_by_torchrun() and device.index not in (None, local_rank()):
        raise UserError(f"under torchrun each process takes the GPU of its LOCAL_RANK, so '--device {name}' would "
                        "put several processes on one GPU; pass --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' asked for, but it is not available here; use --device cpu or auto")
    return device


def autocast(device: torch.device) -> ContextManager[object]:
    """bf16 autocast on CUDA; full fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def training_kernels(device: torch.device) -> Iterator[None]:
    """cuDNN's benchmark mode for the length of a training on CUDA: it times the convolution algorithms
    once per input shape and keeps the fastest, and a training's shapes repeat every step. Attacks leave
    it as the user set it (off by default): their batches shrink as points leave, so shapes rarely repeat."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def uses_channels_last(device: torch.device) -> bool:
    """Channels-last convolutions are faster on CUDA and, with oneDNN, on CPU too (1.2-1.8x measured)."""
    return device.type in ("cuda", "cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    threads = torch.get_num_threads()
    return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads > 1 else ''})"
