"""Training configs: the schema, the named recipes in ``configs/recipes`` and how they combine."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from ..config import apply_overrides, build, merge, read_yaml, to_dict
from ..errors import UserError
from ..jpeg.config import JpegConfig
from ..models.jpegdl import plain_architecture


@dataclass
class DataConfig:
    name: str = "embedded"
    root: str | None = None
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerConfig:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    # architectures trained with another base LR (the CIFAR-100 recipe uses 0.01 for MobileNet/ShuffleNet)
    lr_by_model: dict[str, float] = field(default_factory=dict)


@dataclass
class ScheduleConfig:
    name: Literal["step", "cosine", "constant"] = "step"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0


@dataclass
class AugmentConfig:
    crop_padding: int = 4
    hflip: bool | None = None  # None: whatever the data set says suits it


MAX_SEED = 2**32 - 1     # what every random generator here takes (torch's seeds overflow at 2^64)


@dataclass
class TrainConfig:
    model: str = "resnet8x4"
    data: DataConfig = field(default_factory=DataConfig)
    recipe: str = "quick"
    seed: int = 0
    epochs: int = 240
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    device: str = "auto"

    def validate(self) -> None:
        checks = [
            (0 <= self.seed <= MAX_SEED, f"seed must be an integer from 0 to {MAX_SEED:,}, got {self.seed}"),
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (self.optimizer.lr > 0, f"optimizer.lr must be positive, got {self.optimizer.lr}"),
            (all(v > 0 for v in self.optimizer.lr_by_model.values()), "optimizer.lr_by_model values must be positive"),
            (0 <= self.optimizer.momentum < 1, f"optimizer.momentum must lie in [0, 1), got {self.optimizer.momentum}"),
            (self.optimizer.weight_decay >= 0, "optimizer.weight_decay must not be negative"),
            (not self.optimizer.nesterov or self.optimizer.momentum > 0, "optimizer.nesterov needs momentum > 0"),
            (0 < self.schedule.gamma <= 1, f"schedule.gamma must lie in (0, 1], got {self.schedule.gamma}"),
            (0 <= self.schedule.warmup_epochs < self.epochs, "schedule.warmup_epochs must lie in [0, epochs)"),
            (all(m >= 0 for m in self.schedule.milestones), "schedule.milestones must not be negative"),
            (self.schedule.min_lr >= 0, "schedule.min_lr must not be negative"),
            (0 <= self.augment.crop_padding <= 16, "augment.crop_padding must lie in 0..16"),
            *self.jpeg.checks(self.model, plain_architecture(self.model)),
            (self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
             f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def base_lr(self) -> float:
        """The recipe's LR for this model: ``lr_by_model`` by its exact name, else by the plain architecture
        (``jpegdl_mobilenetv2`` trains at mobilenetv2's LR, as the JPEG-DL authors did), else ``lr``."""
        table = self.optimizer.lr_by_model
        return table.get(self.model, table.get(plain_architecture(self.model), self.optimizer.lr))

    def as_dict(self) -> dict[str, Any]:
        return to_dict(self)


RECIPE_PACKAGE = "robust_kd.configs"


def recipe_folder() -> Path:
    return Path(str(resources.files(RECIPE_PACKAGE) / "recipes"))


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_folder().glob("*.yaml"))


def recipe_mapping(recipe: str) -> dict[str, Any]:
    """A named recipe from configs/recipes, or a path to a YAML file."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return read_yaml(path)
    candidate = recipe_folder() / f"{recipe}.yaml"
    if not candidate.is_file():
        raise UserError(
            f"unknown recipe '{recipe}'; choose one of: {', '.join(list_recipes())} or give a path to a YAML file"
        )
    return read_yaml(candidate)


def drop_unset(mapping: dict[str, Any]) -> dict[str, Any]:
    """Settings left unset on the command line must not hide the recipe's values."""
    kept = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            value = drop_unset(value)
            if not value:
                continue
        if value is not None:
            kept[key] = value
    return kept


def resolve_train_config(recipe: str, settings: dict[str, Any], overrides: list[str]) -> TrainConfig:
    """Recipe file, then explicit settings (from command-line options), then ``key=value`` overrides."""
    mapping = recipe_mapping(recipe)
    mapping = merge(mapping, {"recipe": recipe, **drop_unset(settings)})
    mapping = apply_overrides(mapping, overrides)
    config = build(TrainConfig, mapping)
    config.validate()
    return config
