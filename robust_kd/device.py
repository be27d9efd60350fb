"""Device choice and the precision settings that go with it."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator

import torch

from .errors import UserError


KNOWN_TYPES = ("cpu", "cuda", "mps")      # what robust-kd runs on (torch knows more names: meta, xla, ...)


def available_devices() -> list[str]:
    """The devices this machine has, as --device takes them."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{k} ({_gpu_name(k)})" for k in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def _gpu_name(index: int) -> str:
    try:
        return torch.cuda.get_device_name(index)
    except (RuntimeError, AssertionError, AttributeError):     # a driver that answers is_available() only
        return "GPU"


def _no_such_device(name: str, why: str) -> UserError:
    return UserError(f"--device '{name}': {why}; this machine has: {', '.join(available_devices())} "
                     "(or auto: CUDA if visible, else cpu)")


def _check_exists(name: str, device: torch.device) -> None:
    """Refuse a device this machine lacks, before anything starts (torch accepts 'cpu:7' and fails later, or
    never: a CPU index is ignored)."""
    if device.type not in KNOWN_TYPES:
        raise _no_such_device(name, f"robust-kd runs on {', '.join(KNOWN_TYPES)}, not '{device.type}'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _no_such_device(name, "no CUDA GPU is visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise _no_such_device(name, "mps is not available here")
    count = torch.cuda.device_count() if device.type == "cuda" else 1
    if device.index is not None and device.index >= count:
        raise _no_such_device(name, f"there is no {device.type} device number {device.index}")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA if visible, else the CPU. Under torchrun, ``auto`` and ``cuda`` mean this
    process's own GPU (cuda:LOCAL_RANK). A device this machine lacks is refused in one line that lists
    the ones it has."""
    from .distributed import launched_by_torchrun, local_rank

    name = str(name).strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and launched_by_torchrun() and torch.cuda.is_available():
        name = f"cuda:{local_rank()}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise _no_such_device(name, "unknown device name (robust-kd takes auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda" and launched_by_torchrun() and device.index not in (None, local_rank()):
        raise UserError(f"under torchrun each process takes the GPU of its LOCAL_RANK, so '--device {name}' would "
                        "put several processes on one GPU; pass --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")
    _check_exists(name, device)
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
