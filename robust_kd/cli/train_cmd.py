"""``robust-kd train``: train one model from a recipe into a run folder (resumable)."""

from __future__ import annotations

import click

from .output import print_json, print_line
from .params import SEED


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("--model", "-m", metavar="ARCH", help="Architecture (see 'robust-kd models'); default: the recipe's.")
@click.option("--data", "-d", metavar="NAME", help="Data set (see 'robust-kd data'); default: embedded.")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set.")
@click.option("--download", is_flag=True, help="Download CIFAR through torchvision (needs network access).")
@click.option("--recipe", "-r", default="quick", show_default=True, help="Recipe in configs/recipes, or a YAML path.")
@click.option("--seed", type=SEED, help="Seed of initialisation, shuffling and augmentation (default 0).")
@click.option("--device", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default auto).")
@click.option("--name", metavar="NAME",
              help="Run folder name under --runs-dir: letters, digits, _ . = - (default: MODEL_DATA_RECIPE_seedN). "
                   "One training at a time per run folder.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders live.")
@click.option("--fresh", is_flag=True, help="Delete this run's folder and start over.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def train(overrides: tuple[str, ...], model: str | None, data: str | None, data_root: str | None, download: bool,
          recipe: str, seed: int | None, device: str | None, name: str | None, runs_dir: str, fresh: bool,
          as_json: bool) -> None:
    """Train a model; rerunning the same command resumes an interrupted run.

    Any config key can be set as KEY=VALUE (e.g. epochs=3 optimizer.lr=0.1 schedule.name=step).

    Example: robust-kd train --model resnet8x4 --recipe quick epochs=3
    """
    from ..train import default_reporter, prepare_training, resolve_train_config

    settings = {
        "model": model, "seed": seed, "device": device,
        "data": {"name": data, "root": data_root, "download": download or None},
    }
    config = resolve_train_config(recipe, settings, list(overrides))
    trainer = prepare_training(config, runs_dir=runs_dir, name=name, fresh=fresh,
                               reporter=None if as_json else default_reporter())
    summary = trainer.fit()
    if as_json:
        print_json(summary)
        return
    print_line(
        f"{summary['model']} on {summary['data']}: test accuracy {100 * summary['final_test_accuracy']:.2f}% "
        f"after {summary['epochs']} epoch{'s' if summary['epochs'] != 1 else ''} "
        f"(best {100 * summary['best_test_accuracy']:.2f}% at epoch "
        f"{summary['best_epoch']}); {summary['images_per_s']:.0f} img/s on {summary['device']}"
    )
    if "jpeg_table_shift" in summary:
        print_line(f"JPEG tables moved from their initial values by {100 * summary['jpeg_table_shift']:.1f}% "
                   f"on average (largest entry {100 * summary['jpeg_table_shift_max']:.1f}%)")
    print_line(f"run folder: {summary['run']}  checkpoint: {summary['checkpoint']}")
