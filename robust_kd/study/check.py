"""Everything a study's jobs will need, checked before the first starts: a mistake in a late job's settings
would otherwise surface hours in, after the early jobs had run."""

from __future__ import annotations

from ..errors import UserError
from .grid import Study

def _init_checkpoint(argv: list[str]) -> list[str]:
    """The override a JPEG-DL job adds to the plan's: the plain model its tables start from."""
    return [a for a in argv if a.startswith("jpeg.init_checkpoint=")]




def check_study(study: Study) -> None:
    """The device, every training's recipe, model and overrides, every distillation method with its options,
    and the data (loaded once)."""
    from ..data.registry import dataset_entry
    from ..device import resolve_device
    from ..distill.setup import resolve_distill_config
    from ..train import load_data_once, resolve_train_config

    plan, settings = study.plan, study.settings
    resolve_device(settings.device)
    data = {"name": settings.data or plan.data, "root": settings.data_root or plan.data_root}
    common = {"data": data, "device": settings.device}
    overrides = list(plan.overrides)
    entry = dataset_entry(data["name"])
    if data["root"] is None and entry.needs_root and entry.default_root is None:
        raise UserError(f"the {plan.name} study trains on {data['name']}, which is read from a folder: give "
                        f"--data-root <folder with the {data['name']} files> (or --data embedded for the built-in set)")
    where = plan.at("overrides") if plan.overrides else plan.at("recipe")
    try:
        configs = [resolve_train_config(plan.recipe, {**common, "model": job.argv[job.argv.index("--model") + 1]},
                                        [*overrides, *_init_checkpoint(job.argv)])
                   for job in study.jobs if job.verb == "train"]
        for k, spec in enumerate(plan.methods):
            where = plan.at("methods", k)
            options = [f"distill.options.{key}={value}" for key, value in spec.options]
            for pair in plan.pairs:
                student = {**common, "model": pair.student}
                resolve_distill_config(spec.recipe or plan.recipe, spec.method, pair.teacher, student,
                                       [*overrides, *options])
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    if configs:
        load_data_once(configs[0])
