"""The ``jpeg`` section of a training config: the JPEG layer's options and how its tables train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class JpegConfig:
    """JPEG-DL settings; used by ``jpegdl_*`` models only. The defaults are the authors' CIFAR-100 code
    (JpegInspiredDl/JPEG-Inspired-DL @ 071650f, train_teacher_cifar_JPEG.py with its README's flags);
    ``bits=16, table_min=0.05, chroma_offset=0`` is our option of an index range that never clips, and
    ``init=abs_avg`` the initialisation that needs no pretrained model (README, "JPEG-DL")."""

    alpha: float = 5.0  # soft quantizer sharpness, fixed
    window: int = 5  # candidate indices around round(z/q)
    bits: int = 8  # signed range of quantization indices: [-127, 127], as the authors' code
    chroma_offset: float = 0.5  # the authors' chroma centre 128.5 (JFIF: 0)
    init: Literal["standard", "abs_avg", "sensitivity"] = "sensitivity"
    quality: int = 50  # tables of init=standard
    q_max: float = 10.0  # init=sensitivity scales the luma table to this maximum
    init_checkpoint: str | None = None  # init=sensitivity: a pretrained plain model of the same architecture
    init_images: int = 10000  # training images used to initialise the tables (the authors' 10000)
    init_augmented: bool = True  # the first epoch's shuffled, augmented images (the authors'); false: as stored
    sensitivity_batchnorm: Literal["train", "eval"] = "train"  # the authors estimate with BatchNorm in train mode
    lr: float = 0.003  # Adam on the tables
    lr_schedule: Literal["constant", "follow"] = "follow"  # follow: scaled like the network's LR (the authors')
    table_min: float = 1e-5
    table_max: float = 255.0

    def layer_options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "window": self.window, "bits": self.bits, "quality": self.quality,
                "table_min": self.table_min, "table_max": self.table_max, "chroma_offset": self.chroma_offset}

    def checks(self, model: str = "", plain: str = "") -> list[tuple[bool, str]]:
        """(condition, message if it fails) for each rule; the training config raises the first failure.
        ``model`` names the model trained and ``plain`` its architecture without the JPEG layer: the
        pretrained plain model is asked for a ``jpegdl_*`` one only."""
        plain = plain or model
        return [
            (self.alpha > 0 and self.window >= 1 and 2 <= self.bits <= 16,
             "jpeg.alpha must be positive, jpeg.window at least 1 and jpeg.bits in 2..16"),
            (0 < self.table_min < self.table_max, "need 0 < jpeg.table_min < jpeg.table_max"),
            (0.0 <= self.chroma_offset <= 1.0, "jpeg.chroma_offset must lie in [0, 1] (the authors' 0.5, JFIF's 0)"),
            (1 <= self.quality <= 100, f"jpeg.quality must lie in 1..100, got {self.quality}"),
            (self.lr > 0 and self.q_max > 0 and self.init_images >= 1,
             "jpeg.lr, jpeg.q_max and jpeg.init_images must be positive"),
            (self.init != "sensitivity" or bool(self.init_checkpoint) or plain == model,
             (f"{model} starts its JPEG tables from the sensitivity of a pretrained plain {plain} (the JPEG-DL "
              f"authors' setup): train one with 'robust-kd train --model {plain}' on the same data, then add "
              f"jpeg.init_checkpoint=<its checkpoint.pt>; or start without one: jpeg.init=abs_avg")),
        ]
