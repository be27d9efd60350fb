"""Training: recipes, the trainer loop, run folders, and the one-call :func:`train`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .context import TrainingContext
from .evaluate import evaluate
from .objective import CrossEntropy, Objective, StepInfo
from .parts import TrainingPart
from .progress import PlainReporter, Reporter, RichReporter, default_reporter
from .recipe import TrainConfig, list_recipes, resolve_train_config
from .run import RunFolder, run_name
from .trainer import Trainer, TrainingDiverged

__all__ = [
    "CrossEntropy",
    "Objective",
    "PlainReporter",
    "Reporter",
    "RichReporter",
    "RunFolder",
    "StepInfo",
    "TrainConfig",
    "Trainer",
    "TrainingContext",
    "TrainingDiverged",
    "TrainingPart",
    "default_reporter",
    "default_run_name",
    "evaluate",
    "list_recipes",
    "prepare_training",
    "start_trainer",
    "resolve_train_config",
    "train",
]


def default_run_name(config: TrainConfig) -> str:
    recipe = Path(config.recipe).stem
    return f"{config.model}_{config.data.name}_{recipe}_seed{config.seed}"


def load_data_once(config: TrainConfig):
    """The data set; under torchrun with --download, rank 0 fetches it before the others read it."""
    from .. import distributed
    from ..data import load_dataset

    if config.data.download and distributed.world_size() > 1 and not distributed.is_main():
        distributed.barrier()
        return load_dataset(config.data.name, config.data.root, **config.data.options)
    dataset = load_dataset(config.data.name, config.data.root, download=config.data.download, **config.data.options)
    if config.data.download and distributed.world_size() > 1:
        distributed.barrier()
    return dataset


def start_trainer(run: RunFolder, make: Callable[[], Trainer]) -> Trainer:
    """The trainer of a run folder just prepared (and held); the hold ends with :meth:`Trainer.fit`, or
    here when the trainer cannot be made."""
    try:
        return make()
    except BaseException:
        run.release()
        raise


def prepare_training(
    config: TrainConfig,
    *,
    runs_dir: str | Path = "runs",
    name: str | None = None,
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> Trainer:
    """Check everything (name, device, data, model) before a run folder is touched, then set up the
    trainer. The run folder stays locked for this process (see :meth:`RunFolder.hold`) until the
    trainer's :meth:`~Trainer.fit` ends."""
    from ..checkpoint import read_checkpoint
    from ..compatibility import of_checkpoint, of_data, require_match
    from ..device import resolve_device
    from ..models import create_model, has_input_layer

    folder = run_name(name, default_run_name(config))
    resolve_device(config.device)
    init = None
    if has_input_layer(config.model) and config.jpeg.init == "sensitivity":   # fail before the run starts
        init = read_checkpoint(config.jpeg.init_checkpoint)["metadata"]  # type: ignore[arg-type]
    dataset = load_data_once(config)
    if init is not None:
        require_match(of_checkpoint(f"jpeg.init_checkpoint '{config.jpeg.init_checkpoint}'", init),
                      of_data(dataset.name, dataset.num_classes, dataset.channels, dataset.size, dataset.class_names),
                      "give jpeg.init_checkpoint a plain model trained on this data set")
    torch.manual_seed(config.seed)
    model = create_model(
        config.model, dataset.num_classes, in_channels=dataset.channels, image_size=dataset.size,
        mean=dataset.mean, std=dataset.std, input_layer_options=config.jpeg.layer_options(),
    )
    run = RunFolder.prepare(runs_dir, folder, config.as_dict(), fresh=fresh)
    return start_trainer(run, lambda: Trainer(config, model, dataset, run, reporter=reporter))


def train(
    model: str = "resnet8x4",
    data: str = "embedded",
    recipe: str = "quick",
    *,
    data_root: str | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    runs_dir: str | Path = "runs",
    name: str | None = None,
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data`` with ``recipe`` (plus ``key=value`` overrides); returns the summary.

    >>> summary = train("resnet8x4", "embedded", "quick", overrides=["epochs=1"])  # doctest: +SKIP
    """
    settings: dict[str, Any] = {"model": model, "data": {"name": data, "root": data_root}, "seed": seed}
    config = resolve_train_config(recipe, settings, list(overrides))
    trainer = prepare_training(config, runs_dir=runs_dir, name=name, fresh=fresh, reporter=reporter)
    return trainer.fit()
