"""``robust-kd data``: the data sets, and a closer look at one."""

from __future__ import annotations

from pathlib import Path

import click

from .output import print_json, print_line, print_table


@click.command()
@click.option("--show", metavar="NAME", help="Load this data set and describe it.")
@click.option("--data-root", metavar="FOLDER", help="Folder of the data set given to --show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data(show: str | None, data_root: str | None, as_json: bool) -> None:
    """List the data sets, or load one with --show to check it is in place.

    Example: robust-kd data --show fashion-mnist
    """
    from ..data import list_datasets, load_dataset

    if show is not None:
        dataset = load_dataset(show, data_root)
        info = dataset.describe()
        counts = dataset.train_labels.bincount(minlength=dataset.num_classes).tolist()
        info["train_per_class"] = counts
        if as_json:
            print_json(info)
            return
        print_line(f"{info['name']}: {info['train_size']} train / {info['test_size']} test images, "
                   f"{info['channels']}×{info['size']}×{info['size']}, {info['num_classes']} classes, "
                   f"from {info['source']}")
        print_line(f"mean {info['mean']}  std {info['std']}  horizontal flip {'on' if info['hflip'] else 'off'}")
        classes = ", ".join(f"{n} ({c})" for n, c in zip(info["class_names"][:20], counts))
        print_line(f"classes (train images): {classes}{' …' if dataset.num_classes > 20 else ''}")
        return
    rows = []
    for entry in list_datasets():
        if entry.default_root:
            where = entry.default_root + ("" if Path(entry.default_root).is_dir() else " (not installed)")
        else:
            where = "--data-root" if entry.needs_root else "built in"
        rows.append({
            "name": entry.name, "channels": entry.channels, "size": entry.size, "classes": entry.num_classes,
            "where": where, "description": entry.description, "licence": entry.licence, "options": entry.options(),
            "option_values": {key: spec.describe() for key, spec in entry.option_specs.items()},
        })
    if as_json:
        print_json(rows)
        return
    print_table(
        "robust-kd data sets",
        ["name", "channels", "size", "classes", "where", "description"],
        [(r["name"], r["channels"] or "any", r["size"] or "any", r["classes"] or "any", r["where"], r["description"])
         for r in rows],
    )
