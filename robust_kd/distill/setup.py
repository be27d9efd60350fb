"""Distillation runs: the config, the published per-method defaults, and setting up the trainer.

Option values are resolved in this order, later ones winning: the method class's defaults, the
method's preset (e.g. ``wttm`` = TTM with ``weighted``), ``configs/methods/<method>.yaml``
(``options``, then ``pairs["<teacher>-><student>"]`` for the pair at hand), then the user's
``distill.options.<key>=<value>`` overrides. The resolved values are written to the run's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from ..config import apply_overrides, build, merge, read_yaml
from ..errors import UserError
from ..models.jpegdl import plain_architecture
from ..train.recipe import TrainConfig, drop_unset, recipe_mapping
from .base import create_distiller, default_options, method_entry


@dataclass
class DistillSection:
    method: str = "kd"
    options: dict[str, Any] = field(default_factory=dict)
    teacher_cache: Literal["auto", "always", "never"] = "auto"  # (not on/off: YAML reads those as booleans)


@dataclass
class DistillConfig(TrainConfig):
    teacher: str | None = None  # checkpoint of the teacher
    distill: DistillSection = field(default_factory=DistillSection)


def method_file(method: str) -> Path:
    return Path(str(resources.files("robust_kd.configs") / "methods" / f"{method}.yaml"))


def pair_key(teacher_arch: str, student_arch: str) -> str:
    return f"{plain_architecture(teacher_arch)}->{plain_architecture(student_arch)}"


def published_options(method: str, teacher_arch: str, student_arch: str) -> tuple[dict[str, Any], str]:
    """Options of ``method`` for this pair and where they came from (for the log)."""
    options = default_options(method)
    path = method_file(method)
    where = "class defaults"
    if path.is_file():
        data = read_yaml(path)
        options.update(data.get("options") or {})
        where = f"configs/methods/{method}.yaml"
        pair = pair_key(teacher_arch, student_arch)
        pairs = data.get("pairs") or {}
        if pair in pairs:
            options.update(pairs[pair])
            where += f" (pair {pair})"
        elif pairs:
            where += f" (no published values for {pair}: the file's defaults; consider tuning them)"
    return options, where


def resolve_distill_config(recipe: str, method: str, teacher_arch: str, settings: dict[str, Any],
                           overrides: Sequence[str]) -> tuple[DistillConfig, str]:
    """The full config of a distillation run and a note on where its method options came from."""
    method_entry(method)  # an unknown method fails here
    student = settings.get("model") or recipe_mapping(recipe).get("model") or TrainConfig.model
    options, where = published_options(method, teacher_arch, student)
    mapping = merge(recipe_mapping(recipe), {"recipe": recipe, **drop_unset(settings)})
    mapping = merge(mapping, {"distill": {"method": method, "options": options}})
    mapping = apply_overrides(mapping, list(overrides))
    config = build(DistillConfig, mapping)
    config.validate()
    create_distiller(config.distill.method, config.distill.options)  # checks every option now
    return config, where


def default_distill_run_name(config: DistillConfig, teacher_arch: str) -> str:
    recipe = Path(config.recipe).stem
    return f"{config.model}_from_{teacher_arch}_{config.distill.method}_{config.data.name}_{recipe}_seed{config.seed}"


def prepare_distillation(
    teacher_path: str,
    method: str = "kd",
    *,
    student: str | None = None,
    data: str | None = None,
    data_root: str | None = None,
    recipe: str = "quick",
    seed: int | None = None,
    device: str | None = None,
    overrides: Sequence[str] = (),
    runs_dir: str | Path = "runs",
    name: str | None = None,
    fresh: bool = False,
    reporter: Any = None,
):
    """Check the teacher, data and options before touching a run folder; return the trainer."""
    from .. import distributed
    from ..checkpoint import load_model, read_checkpoint
    from ..data import BatchLoader
    from ..device import autocast, resolve_device
    from ..models import create_model
    from ..train import RunFolder, Trainer, evaluate, load_data_once, start_trainer
    from ..train.run import run_name
    from .objective import DistillationObjective

    teacher_meta = read_checkpoint(teacher_path)["metadata"]
    teacher_arch = teacher_meta["arch"]
    settings = {"model": student, "seed": seed, "device": device, "teacher": str(teacher_path),
                "data": {"name": data, "root": data_root}}
    config, where = resolve_distill_config(recipe, method, teacher_arch, settings, overrides)
    folder = run_name(name, default_distill_run_name(config, teacher_arch))
    torch_device = resolve_device(config.device)
    dataset = load_data_once(config)
    if int(teacher_meta["num_classes"]) != dataset.num_classes or int(teacher_meta["in_channels"]) != dataset.channels:
        raise UserError(
            f"teacher '{teacher_path}' ({teacher_arch}) predicts {teacher_meta['num_classes']} classes from "
            f"{teacher_meta['in_channels']}-channel images, but '{dataset.name}' has {dataset.num_classes} classes "
            f"of {dataset.channels}-channel images; use a teacher trained on this data set"
        )
    teacher = load_model(teacher_path, torch_device)
    test = BatchLoader(dataset.test_images, dataset.test_labels, batch_size=config.eval_batch_size, device=torch_device)
    with autocast(torch_device):
        teacher_accuracy = evaluate(teacher, test)["accuracy"]
    torch.manual_seed(config.seed)
    model = create_model(config.model, dataset.num_classes, in_channels=dataset.channels, image_size=dataset.size,
                         mean=dataset.mean, std=dataset.std, input_layer_options=config.jpeg.layer_options())
    distiller = create_distiller(config.distill.method, config.distill.options)
    if distributed.world_size() > 1 and distiller.calls_student_again():
        raise UserError(f"distill --method {config.distill.method} calls the student again on augmented copies of "
                        "part of each batch, which does not split across torchrun's processes yet; run it as one "
                        "process, or add distill.options.augment=none")
    objective = DistillationObjective(distiller, teacher, device=torch_device, teacher_arch=teacher_arch,
                                      student_arch=config.model, cache=config.distill.teacher_cache)
    run = RunFolder.prepare(runs_dir, folder, config.as_dict(), fresh=fresh)
    teacher_info = {"checkpoint": str(teacher_path), "arch": teacher_arch, "test_accuracy": teacher_accuracy}
    extra = {"method": config.distill.method, "method_options_from": where, "teacher": teacher_info}
    trainer = start_trainer(run, lambda: Trainer(config, model, dataset, run, objective=objective, reporter=reporter,
                                                 summary_extra=extra))
    if reporter is not None:
        reporter.message(f"teacher {teacher_arch} ({teacher_path}): test accuracy {100 * teacher_accuracy:.2f}%; "
                         f"{config.distill.method} options from {where}")
    return trainer


def distill(teacher: str, student: str = "resnet8x4", method: str = "kd", data: str = "embedded", recipe: str = "quick",
            **kwargs: Any) -> dict[str, Any]:
    """Distil ``teacher`` (a checkpoint) into a new ``student``; returns the run's summary.

    >>> distill("runs/resnet32x4_embedded_quick_seed0/checkpoints/last.pt", "resnet8x4", "wttm")  # doctest: +SKIP
    """
    return prepare_distillation(teacher, method, student=student, data=data, recipe=recipe, **kwargs).fit()
