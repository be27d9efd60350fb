"""The trainable JPEG layer of JPEG-DL, usable in front of any model that takes [0, 1] images.

pixels [0, 1] → ×255 → YCbCr (JFIF; grey images stay one luma channel) → −128 → 8×8 block DCT →
quantize each coefficient with the luma table (Y) or the chroma table (Cb, Cr) → inverse DCT → +128
→ RGB → ÷255. Images of any size are padded to a multiple of 8 (edge replication, as libjpeg)
and cropped back.

Modes: ``soft`` (the differentiable quantizer, for training), ``hard`` (the real
non-differentiable codec: rounded quantization indices and, like an encoder and decoder, 8-bit
samples before the DCT and after the inverse) and ``off`` (transforms only, no rounding at all).
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import nn

from ..errors import UserError
from . import color, dct
from .quantize import hard_quantize, soft_quantize
from .tables import standard_tables

Mode = Literal["soft", "hard", "off"]
MODES = ("soft", "hard", "off")


class JpegLayer(nn.Module):
    """JPEG compression with trainable quantization tables (128 parameters for RGB, 64 for grey).

    The tables start as the standard JPEG tables at ``quality``; :mod:`robust_kd.jpeg.init` has
    JPEG-DL's data-driven initialisations (sensitivity, abs-avg).

    ``alpha`` is the soft quantizer's sharpness (JPEG-DL uses 5 on CIFAR), ``window`` the number of
    candidate indices, ``bits`` the signed range of quantization indices, and tables are kept in
    [``table_min``, ``table_max``]. ``chroma_offset`` is added to the level-shifted Cb and Cr
    before the DCT (and removed after): JPEG-DL's code centres chroma on 128.5, not on JFIF's 128,
    which moves each chroma DC coefficient by +4; the ``hard`` mode is the real codec and never
    applies it.

    JPEG-DL's CIFAR training uses 8 bits, [1e-5, 255] and the 0.5 offset (``JpegConfig``'s defaults);
    this constructor's defaults (16 bits, steps ≥ 0.05, no offset) are our option for an index range
    that never clips. The difference matters: with 8 bits a coefficient saturates at ±127 steps, and
    the authors' sensitivity tables give some low frequencies steps far below the standard ones
    (MobileNetV2's map sets the luma DC step to 1.83, capping a block's mean at 128 ± 29 grey levels;
    most shipped maps instead give DC the largest step, 10, and clip little). With 16 bits and steps
    ≥ 0.05 no coefficient of an 8-bit image can clip (32767 × 0.05 > 1024); wherever 8 bits would not
    clip, both give the same output.
    """

    def __init__(
        self,
        channels: int = 3,
        *,
        alpha: float = 5.0,
        window: int = 5,
        bits: int = 16,
        mode: Mode = "soft",
        quality: int = 50,
        table_min: float = 0.05,
        table_max: float = 255.0,
        chroma_offset: float = 0.0,
    ) -> None:
        super().__init__()
        if channels not in (1, 3):
            raise UserError(f"the JPEG layer takes 1 (grey) or 3 (RGB) channels, got {channels}")
        if not alpha > 0 or window < 1 or not 2 <= bits <= 16 or not 0 < table_min < table_max:
            raise UserError(
                f"JPEG layer: need alpha > 0, window ≥ 1, 2 ≤ bits ≤ 16 and 0 < table_min < table_max; "
                f"got alpha={alpha}, window={window}, bits={bits}, table_min={table_min}, table_max={table_max}"
            )
        self.channels = channels
        self.alpha = float(alpha)
        self.window = int(window)
        self.bits = int(bits)
        self.quality = int(quality)
        self.table_min = float(table_min)
        self.table_max = float(table_max)
        self.chroma_offset = float(chroma_offset)
        self.mode: Mode = "soft"
        self.set_mode(mode)
        luma, chroma = standard_tables(quality)
        self.luma_table = nn.Parameter(luma.clone())
        self.chroma_table = nn.Parameter(chroma.clone()) if channels == 3 else None

    # ------------------------------------------------------------------ configuration

    def options(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this layer (the tables come from the state dict)."""
        return {"alpha": self.alpha, "window": self.window, "bits": self.bits, "quality": self.quality,
                "table_min": self.table_min, "table_max": self.table_max, "chroma_offset": self.chroma_offset}

    def set_mode(self, mode: str) -> JpegLayer:
        if mode not in MODES:
            raise UserError(f"unknown JPEG layer mode '{mode}'; choose one of: {', '.join(MODES)}")
        self.mode = mode  # type: ignore[assignment]
        return self

    def tables(self) -> dict[str, torch.Tensor]:
        tables = {"luma": self.luma_table.detach().cpu().clone()}
        if self.chroma_table is not None:
            tables["chroma"] = self.chroma_table.detach().cpu().clone()
        return tables

    @torch.no_grad()
    def set_tables(self, luma: torch.Tensor, chroma: torch.Tensor | None = None) -> None:
        self.luma_table.copy_(luma.to(self.luma_table))
        if self.chroma_table is not None and chroma is not None:
            self.chroma_table.copy_(chroma.to(self.chroma_table))
        self.project_parameters_()

    @torch.no_grad()
    def project_parameters_(self) -> None:
        """Keep the tables positive and bounded; the trainer calls this after every step."""
        for table in self.parameters():
            table.clamp_(self.table_min, self.table_max)

    # ------------------------------------------------------------------ transform

    def coefficients(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """DCT coefficients (B×C×nh×nw×8×8, level-shifted, 0–255 scale) of images in [0, 1]."""
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise UserError(
                f"the JPEG layer expects B×{self.channels}×H×W images, got shape {tuple(x.shape)}"
            )
        pixels = x.float() * 255.0
        if self.channels == 3:
            pixels = color.rgb_to_ycbcr(pixels)
        if self.mode == "hard":  # a codec stores 8-bit YCbCr samples
            pixels = _to_8bit(pixels)
        blocks, size = dct.to_blocks(pixels - self._level(pixels))
        return dct.block_dct(blocks), size

    def _level(self, like: torch.Tensor) -> torch.Tensor | float:
        """The level shift per channel: 128, less the chroma offset on Cb and Cr (never in hard mode)."""
        if self.channels == 1 or self.chroma_offset == 0.0 or self.mode == "hard":
            return 128.0
        offset = self.chroma_offset
        return torch.tensor([128.0, 128.0 - offset, 128.0 - offset], dtype=like.dtype, device=like.device).view(
            1, 3, 1, 1)

    def images(self, coefficients: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        spatial = dct.from_blocks(dct.block_idct(coefficients), size)
        pixels = spatial + self._level(spatial)
        if self.mode == "hard":  # a decoder outputs 8-bit samples at each stage
            pixels = _to_8bit(pixels)
        if self.channels == 3:
            pixels = color.ycbcr_to_rgb(pixels)
            if self.mode == "hard":
                pixels = _to_8bit(pixels)
        return pixels / 255.0

    def quantize(self, coefficients: torch.Tensor) -> torch.Tensor:
        if self.mode == "off":
            return coefficients
        parts = [coefficients[:, :1]]
        tables = [self.luma_table]
        if self.channels == 3:
            parts.append(coefficients[:, 1:])
            tables.append(self.chroma_table)  # type: ignore[arg-type]
        out = []
        for part, table in zip(parts, tables):
            q = table.clamp(self.table_min, self.table_max)
            if self.mode == "hard":
                out.append(hard_quantize(part, q, self.bits))
            else:
                out.append(soft_quantize(part, q, self.alpha, self.window, self.bits))
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # always float32, also under a training step's bf16 autocast: DC coefficients reach ±1024, where
        # bf16 steps by 4-8, and the quantization steps go down to 0.05
        with _without_autocast(x.device.type):
            coefficients, size = self.coefficients(x)
            out = self.images(self.quantize(coefficients), size)
        return out.to(x.dtype).contiguous(memory_format=_memory_format(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode}, alpha={self.alpha}, window={self.window}, bits={self.bits}"


def _without_autocast(device_type: str) -> contextlib.AbstractContextManager:
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _to_8bit(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.round().clamp(0.0, 255.0)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def jpeg_layers(model: nn.Module) -> list[JpegLayer]:
    return [m for m in model.modules() if isinstance(m, JpegLayer)]


def set_jpeg_mode(model: nn.Module, mode: str) -> int:
    """Switch every JPEG layer in ``model`` to ``mode``; returns how many were switched."""
    layers = jpeg_layers(model)
    for layer in layers:
        layer.set_mode(mode)
    return len(layers)
