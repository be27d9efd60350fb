"""What a result says about how it was computed: the versions whose code decided its verdicts, the
device (and on CUDA the precision of float32 convolutions), and fingerprints of the weights and
data, which key a resumable evaluation to the very model and points it began with."""

from __future__ import annotations

import functools
import platform
import zlib
from typing import Iterable

import torch
from torch import nn


@functools.cache
def versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version(), "torch": str(torch.__version__)}
    for package in ("robust-kd", "torchattacks", "pyautoattack"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def computed_by() -> str:
    """The versions whose code decides a verdict, as each batch of a state records them."""
    found = versions()
    return f"robust-kd {found.get('robust-kd', 'unknown')} with torch {found['torch']}"


def device_name(device: torch.device) -> str:
    """The device, and on CUDA the precision of float32 convolutions (cuDNN's default is TF32, whose
    rounding alone may tip a point on the boundary: worth knowing when two devices disagree)."""
    if device.type != "cuda":
        return f"{device.type} ({torch.get_num_threads()} threads)" if device.type == "cpu" else device.type
    levels = [getattr(torch.backends.cudnn, "conv", None), torch.backends.cudnn, torch.backends]
    settings = [getattr(level, "fp32_precision", None) for level in levels]
    if settings[0] is None:   # a torch without the fp32_precision settings
        precision = "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    else:                     # "none" inherits from the level above; at the top it means ieee
        precision = next((s for s in settings if s not in (None, "none")), "ieee")
    return f"{torch.cuda.get_device_name(device)} (float32 convolutions: {precision})"


def tensors_fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """CRC-32 of the dtype, shape and bytes of each tensor, in order; memory layout and device do
    not matter."""
    digest = 0
    for tensor in tensors:
        digest = zlib.crc32(f"{tensor.dtype}{tuple(tensor.shape)}".encode(), digest)
        data = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest = zlib.crc32(data.view(torch.uint8).numpy().tobytes(), digest)
    return f"{digest:08x}"


def model_fingerprint(model: nn.Module) -> str:
    """:func:`tensors_fingerprint` of every parameter and buffer: another checkpoint, or the same
    run trained further, gives another value. Wrappers without weights of their own (counting,
    BPDA around the same model) do not matter."""
    return tensors_fingerprint([*model.parameters(), *model.buffers()])
