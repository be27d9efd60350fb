"""The one reader of a user's image file (image folders, RSA stimuli): 8-bit grey or RGB out, or one line.

- **Pixel limit**: an image over :data:`MAX_PIXELS` (Pillow's own default guard, about 9459 × 9459) is
  refused from its header, before anything is decoded; no decompression bomb reaches memory.
- **Bit depths**: 16-bit images are scaled by their depth (value × 255 / 65535, rounded), not clipped
  at 255; Pillow already reads 16-bit RGB(A) PNGs as 8 bits per channel (the high byte).
- **Modes**: each mode Pillow may return has its converter in :data:`CONVERTERS`; a mode without one
  (LAB, signed 16-bit, ...) is refused. Alpha is dropped, as torchvision's image loader does
  (``convert("RGB")``), so an image folder reads as it does in torchvision and in earlier versions.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import UserError

MAX_PIXELS = 89_478_485            # = PIL.Image.MAX_IMAGE_PIXELS by default: 1024 × 1024 × 1024 // 4 // 3
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
GREY_MODES = {"1", "L", "LA", "La", "I", "F", *SIXTEEN_BIT}
SUPPORTED = "save it as 8- or 16-bit greyscale or RGB (e.g. PNG)"


def _refuse(path: Path, problem: str) -> UserError:
    return UserError(f"image '{path}': {problem}")


def open_image(path: Path):
    """The image opened from its header only (lazy), its size checked against :data:`MAX_PIXELS`."""
    from PIL import Image

    try:
        with _quiet():
            img = Image.open(path)
    except Image.DecompressionBombError as err:            # Pillow's own guard, at twice its limit
        found = re.search(r"\((\d+) pixels\)", str(err))
        raise _too_big(path, f"{int(found.group(1)):,} pixels" if found else "too many pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise _unreadable(path, err) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise _too_big(path, f"{width}×{height} = {width * height:,} pixels")
    return img


def _too_big(path: Path, size: str) -> UserError:
    return _refuse(path, f"{size}, over the limit of {MAX_PIXELS:,} (about 9459×9459); shrink it (e.g. to the "
                         "model's input size) before use")


def is_grey(path: Path) -> bool:
    """Whether the file holds a greyscale image (any bit depth, with or without alpha)."""
    with open_image(path) as img:
        return img.mode in GREY_MODES


def read_image(path: Path, mode: str):
    """The image in ``mode`` ('L' or 'RGB', 8 bits per channel), loaded and closed: a ``PIL.Image``."""
    from PIL import Image

    with open_image(path) as img, _quiet():
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise _unreadable(path, err) from None
        convert = CONVERTERS.get("P+alpha" if img.mode == "P" and "transparency" in img.info else img.mode)
        if convert is None:
            raise _refuse(path, f"mode {img.mode} is not read; {SUPPORTED}")
        eight_bit = convert(img, path)
        return eight_bit if eight_bit.mode == mode else eight_bit.convert(mode)


@contextmanager
def _quiet() -> Iterator[None]:
    """Pillow's warnings (bomb size, odd EXIF, palette transparency) are no news here: the limit is
    checked by :func:`open_image`, damage is an error, transparency is handled by the converters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _unreadable(path: Path, err: BaseException) -> UserError:
    why = " ".join(str(err).split()) or type(err).__name__
    return UserError(f"cannot read image '{path}' ({why}); remove or replace the file")


# ----------------------------------------------------------------------------------------- converters
def _plain(img, path):
    return img.convert("RGB") if img.mode not in ("L", "RGB") else img.copy()


def _grey(img, path):
    return img.convert("L")


def _drop_alpha(img, path):
    """Transparency dropped (the colour under it kept), as torchvision's loader reads such images."""
    return img.convert("L") if img.mode in ("LA", "La") else img.convert("RGB")


def _sixteen_bit(img, path):
    return _scaled(np.asarray(img, dtype=np.float64), 65535.0)


def _thirty_two_bit(img, path):
    """Mode I (32-bit integers): the values of a 16-bit image (as Pillow reads some formats), else refused."""
    values = np.asarray(img, dtype=np.float64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise _refuse(path, f"32-bit integer pixels from {values.min():.0f} to {values.max():.0f} lie outside "
                            f"the 16-bit range 0..65535; {SUPPORTED}")
    return _scaled(values, 65535.0)


def _floating(img, path):
    """Mode F (32-bit float, e.g. a float TIFF): values in [0, 1], else refused."""
    values = np.asarray(img, dtype=np.float64)
    if not np.isfinite(values).all():
        raise _refuse(path, f"float pixels that are NaN or inf; {SUPPORTED}")
    if values.size and (values.min() < 0 or values.max() > 1):
        raise _refuse(path, f"float pixels from {values.min():.3g} to {values.max():.3g}; a float image must "
                            f"lie in [0, 1], or {SUPPORTED}")
    return _scaled(values, 1.0)


def _scaled(values: np.ndarray, full_scale: float):
    from PIL import Image

    return Image.fromarray(np.rint(values * (255.0 / full_scale)).clip(0, 255).astype(np.uint8), "L")


Converter = Callable[..., object]
CONVERTERS: dict[str, Converter] = {
    "1": _grey, "L": _plain, "P": _plain, "RGB": _plain, "RGBX": _plain, "CMYK": _plain, "YCbCr": _plain,
    "HSV": _plain, "LA": _drop_alpha, "La": _drop_alpha, "PA": _drop_alpha, "RGBA": _drop_alpha,
    "RGBa": _drop_alpha, "P+alpha": _drop_alpha, "I": _thirty_two_bit, "F": _floating,
    **{m: _sixteen_bit for m in SIXTEEN_BIT},
}
