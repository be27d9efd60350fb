"""``robust-kd models``: the model zoo with sizes."""

from __future__ import annotations

import click

from .output import print_json, print_table


@click.command()
@click.option("--num-classes", type=int, default=100, show_default=True, help="Classes of the head used for the counts.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(num_classes: int, as_json: bool) -> None:
    """List every architecture with its parameters and MACs at 32×32 (3 channels).

    Example: robust-kd models --num-classes 10
    """
    from ..errors import UserError
    from ..models import create_model, list_models, model_complexity, model_family

    if num_classes < 2:
        raise UserError(f"--num-classes must be at least 2, got {num_classes}")
    rows = []
    for name in list_models():
        params, macs = model_complexity(create_model(name, num_classes), (3, 32, 32))
        rows.append({"name": name, "family": model_family(name), "parameters": params, "macs_32x32": macs})
    if as_json:
        print_json(rows)
        return
    print_table(
        f"robust-kd models ({num_classes} classes, MACs for one 3×32×32 image)",
        ["name", "family", "params (M)", "MACs (M)"],
        [(r["name"], r["family"], f"{r['parameters'] / 1e6:.2f}", f"{r['macs_32x32'] / 1e6:.1f}") for r in rows],
        right=("params (M)", "MACs (M)"),
    )
