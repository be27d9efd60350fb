"""Randomness that belongs to a data point, not to a batch.

Random starts and Square's random choices come from a counter-based hash of (seed, stream,
point index, element), so a point's attack is the same whatever batch, shard or resumed run it is
evaluated in. The hash is Chris Wellons' "lowbias32" on 32-bit words, done in int64 tensor ops on
the attack's device.
"""

from __future__ import annotations

import torch

_MASK = 0xFFFFFFFF


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """(x·m) mod 2³² for x < 2³² without int64 overflow: split x into 16-bit halves."""
    high, low = x >> 16, x & 0xFFFF
    return (((high * m) & 0xFFFF) << 16) + low * m & _MASK


def _mix(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def point_words(index: torch.Tensor, count: int, seed: int, stream: int | torch.Tensor) -> torch.Tensor:
    """``count`` pseudo-random 32-bit words (int64 tensor, B×count) for each point in ``index``.

    ``stream`` may be one number or one per point (a B tensor, e.g. each point's own iteration).
    """
    index = index.to(torch.int64)
    if isinstance(stream, torch.Tensor):
        streams = stream.to(device=index.device, dtype=torch.int64).expand_as(index)
        key = _mix((((int(seed) * 0x9E3779B1) & _MASK) + _mul32(streams & _MASK, 0x85EBCA77)) & _MASK)
    else:
        key = _mix(torch.full_like(index, (int(seed) * 0x9E3779B1 + int(stream) * 0x85EBCA77) & _MASK))
    base = _mix((index & _MASK) ^ key)
    positions = torch.arange(count, device=index.device, dtype=torch.int64)
    return _mix((base[:, None] + _mix(positions ^ 0x27D4EB2F)[None, :]) & _MASK)


def point_uniform(index: torch.Tensor, shape: tuple[int, ...], seed: int, stream: int | torch.Tensor,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) values of ``shape`` per point: B×shape."""
    count = 1
    for s in shape:
        count *= s
    words = point_words(index, count, seed, stream)
    return (words.to(torch.float64) / 2.0**32).to(dtype).reshape(len(index), *shape)


def point_normal(index: torch.Tensor, shape: tuple[int, ...], seed: int, stream: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal values per point (Box–Muller on two uniform streams)."""
    u1 = point_uniform(index, shape, seed, stream * 2 + 1, torch.float64).clamp_min(1e-12)
    u2 = point_uniform(index, shape, seed, stream * 2 + 2, torch.float64)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)).to(dtype)


def point_integers(index: torch.Tensor, count: int, high: torch.Tensor | int, seed: int,
                   stream: int | torch.Tensor) -> torch.Tensor:
    """Integers in [0, high) per point (B×count); ``high`` may differ per point (B×1)."""
    words = point_words(index, count, seed, stream)
    # a plain number multiplies as one (no host-to-device copy per call on CUDA); the float64 product is the same
    scale = high.to(words.device, torch.float64) if isinstance(high, torch.Tensor) else float(high)
    return (words.to(torch.float64) / 2.0**32 * scale).floor().to(torch.int64)
