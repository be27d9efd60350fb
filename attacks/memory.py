"""How many images one pass of an attack may hold: APGD-T's and FAB-T's targets side by side, Square's
speculative proposals.

Each attack has its numbers by device (:data:`TARGET_ROWS` for the targets, :data:`SQUARE_ROWS` for
Square's proposals): on a CPU they are numbers of throughput (the passes stop getting faster near 36
images on 2 cores, benchmarks/attack_targets.py), on CUDA a ceiling. On CUDA the evaluation also
measures the bytes one image takes in a forward and backward pass of its model and caps the passes
at a share of the free memory (:func:`rows_that_fit`), so that 64-pixel images or a ResNet-50 do not
run out of memory where 32-pixel images on a small network would fill only a part of the device.
When a pass runs out of memory all the same, the evaluation halves the cap and attacks the same
batch again (:func:`halved`): the batch in flight is kept, and resumes from its snapshot. The cap
changes the speed only, never a verdict (randomness belongs to the points, :mod:`attacks.rng`).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import nn

TARGET_ROWS = {"cpu": 36, "cuda": 4096}
SQUARE_ROWS = {"cpu": 32, "cuda": 4096}
FREE_SHARE = 0.5              # of the free memory a pass may take: the rest holds the batch, the state, the allocator

_cap: ContextVar[int | None] = ContextVar("attack_rows_per_pass", default=None)


def rows_per_pass(device: torch.device, by_device: dict[str, int], otherwise: int) -> int:
    """An attack's images per pass on ``device`` (``by_device``, else ``otherwise``), under the cap of the
    evaluation in flight."""
    rows = by_device.get(device.type, otherwise)
    cap = _cap.get()
    return rows if cap is None else max(min(rows, cap), 1)


@contextlib.contextmanager
def capped(rows: int | None) -> Iterator[None]:
    """Passes of at most ``rows`` images inside (None: no cap)."""
    token = _cap.set(rows)
    try:
        yield
    finally:
        _cap.reset(token)


def halved(cap: int | None, device: torch.device) -> int | None:
    """The cap after a pass ran out of memory; None where it cannot get smaller."""
    ceiling = max(TARGET_ROWS.get(device.type, 1), SQUARE_ROWS.get(device.type, 256))
    current = min(cap, ceiling) if cap is not None else ceiling
    return current // 2 if current > 1 else None


def rows_that_fit(model: nn.Module, probe: torch.Tensor) -> int | None:
    """On CUDA: the images one forward and backward pass of ``model`` can take in :data:`FREE_SHARE`
    of the free memory, measured on the images ``probe``. None on other devices (by throughput there)."""
    device = probe.device
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    points = probe.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(points).float().sum(), points)
    del grad
    per_image = max(torch.cuda.max_memory_allocated(device) - before, 1) / len(probe)
    free, _ = torch.cuda.mem_get_info(device)
    return max(int(FREE_SHARE * free / per_image), 1)


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says that a device ran out of memory: the allocator's own error, or a library's
    (cuDNN, cuBLAS) failing to allocate its workspace, which reaches Python as a plain RuntimeError."""
    kinds = tuple(k for k in (getattr(torch, "OutOfMemoryError", None), getattr(torch.cuda, "OutOfMemoryError", None))
                  if k is not None)
    text = str(error)
    return isinstance(error, kinds) or "out of memory" in text or "ALLOC_FAILED" in text
