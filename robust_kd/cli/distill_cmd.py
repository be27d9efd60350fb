"""``robust-kd distill``: train a student from a teacher checkpoint with one of the KD methods."""

from __future__ import annotations

from pathlib import Path

import click

from .output import print_json, print_line
from .params import SEED


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--teacher", "-t", metavar="CHECKPOINT|RUN", help="The teacher's .pt, or its run folder; required.")
@click.option("--student", "-s", metavar="ARCH",
              help="Student architecture (see 'robust-kd models'); default resnet8x4.")
@click.option("--method", default="kd", show_default=True, help="Distillation method (see 'robust-kd distill --list').")
@click.option("--data", "-d", metavar="NAME", help="Data set (see 'robust-kd data'); default: embedded.")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set.")
@click.option("--recipe", "-r", default="quick", show_default=True,
              help="Training recipe in configs/recipes, or a YAML path.")
@click.option("--seed", type=SEED, help="Seed of initialisation, shuffling and augmentation (default 0).")
@click.option("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default auto).")
@click.option("--name", metavar="NAME",
              help="Run folder name under --runs-dir: letters, digits, _ . = - "
                   "(default: STUDENT_from_TEACHER_METHOD_DATA_RECIPE_seedN). One training at a time per run folder.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders live.")
@click.option("--fresh", is_flag=True, help="Delete this run's folder and start over.")
@click.option("--list", "list_methods", is_flag=True, help="List the methods with their default options and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def distill(overrides: tuple[str, ...], teacher: str | None, student: str | None, method: str, data: str | None,
            data_root: str | None, recipe: str, seed: int | None, device: str | None, name: str | None,
            runs_dir: str, fresh: bool, list_methods: bool, as_json: bool) -> None:
    """Distil a teacher into a student; rerunning the same command resumes an interrupted run.

    Method options are set as distill.options.KEY=VALUE (e.g. distill.options.beta=2); any
    other config key as KEY=VALUE (e.g. epochs=3).

    Example: robust-kd distill --teacher runs/resnet32x4_embedded_quick_seed0/checkpoints/last.pt
    --student resnet8x4 --method wttm
    """
    from ..distill.setup import prepare_distillation
    from ..errors import UserError
    from ..train import default_reporter

    if list_methods:
        show_methods(as_json)
        return
    if teacher is None:
        raise UserError("robust-kd distill needs --teacher <checkpoint>, e.g. runs/<run>/checkpoints/last.pt")
    if Path(teacher).is_dir():                       # a run folder: its last checkpoint
        teacher = str(Path(teacher) / "checkpoints" / "last.pt")
    trainer = prepare_distillation(
        teacher, method, student=student, data=data, data_root=data_root, recipe=recipe, seed=seed, device=device,
        overrides=list(overrides), runs_dir=runs_dir, name=name, fresh=fresh,
        reporter=None if as_json else default_reporter(),
    )
    summary = trainer.fit()
    if as_json:
        print_json(summary)
        return
    teacher_info = summary["teacher"]
    print_line(
        f"{summary['model']} ({summary['method']} from {teacher_info['arch']}) on {summary['data']}: "
        f"student test accuracy {100 * summary['final_test_accuracy']:.2f}% after {summary['epochs']} epochs "
        f"(best {100 * summary['best_test_accuracy']:.2f}%), teacher {100 * teacher_info['test_accuracy']:.2f}%"
    )
    print_line(f"run folder: {summary['run']}  checkpoint: {summary['checkpoint']}")


def show_methods(as_json: bool) -> None:
    import dataclasses

    from ..distill import CommonOptions, list_methods, method_entry
    from ..distill.setup import published_options
    from .output import print_table

    common = {f.name for f in dataclasses.fields(CommonOptions)}
    rows = []
    for name in list_methods():
        options, _ = published_options(name, "", "")
        shown = {k: v for k, v in options.items() if k not in common or v != getattr(CommonOptions(), k)}
        rows.append({"method": name, "summary": method_entry(name).summary, "options": shown})
    if as_json:
        print_json(rows)
        return
    print_table("distillation methods (options: published defaults; every method also takes ka=… and dtd=…)",
                ["method", "summary", "options"],
                [(r["method"], r["summary"], ", ".join(f"{k}={v}" for k, v in r["options"].items())) for r in rows])
