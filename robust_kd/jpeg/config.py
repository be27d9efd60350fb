"""The ``jpeg`` section of a training config: the JPEG layer's options and how its tables train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class JpegConfig:
    """JPEG-DL settings; used by ``jpegdl_*`` models only (defaults: the paper's CIFAR-100 code)."""

    alpha: float = 5.0  # soft quantizer sharpness, fixed
    window: int = 5  # candidate indices around round(z/q)
    bits: int = 16  # signed range of quantization indices (see JpegLayer: wide enough never to clip)
    init: Literal["standard", "abs_avg", "sensitivity"] = "abs_avg"
    quality: int = 50  # tables of init=standard
    q_max: float = 10.0  # init=sensitivity scales the luma table to this maximum
    init_checkpoint: str | None = None  # init=sensitivity: a pretrained plain model of the same task
    init_images: int = 2000  # training images used to initialise the tables
    lr: float = 0.003  # Adam on the tables
    lr_schedule: Literal["constant", "follow"] = "constant"  # follow: scaled like the network's LR
    table_min: float = 0.05
    table_max: float = 255.0

    def layer_options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "window": self.window, "bits": self.bits, "quality": self.quality,
                "table_min": self.table_min, "table_max": self.table_max}

    def checks(self) -> list[tuple[bool, str]]:
        """(condition, message if it fails) for each rule; the training config raises the first failure."""
        return [
            (self.alpha > 0 and self.window >= 1 and 2 <= self.bits <= 16,
             "jpeg.alpha must be positive, jpeg.window at least 1 and jpeg.bits in 2..16"),
            (0 < self.table_min < self.table_max, "need 0 < jpeg.table_min < jpeg.table_max"),
            (1 <= self.quality <= 100, f"jpeg.quality must lie in 1..100, got {self.quality}"),
            (self.lr > 0 and self.q_max > 0 and self.init_images >= 1,
             "jpeg.lr, jpeg.q_max and jpeg.init_images must be positive"),
            (self.init != "sensitivity" or bool(self.init_checkpoint),
             ("jpeg.init=sensitivity needs jpeg.init_checkpoint=<a pretrained plain model's .pt>; "
              "or use jpeg.init=abs_avg")),
        ]
