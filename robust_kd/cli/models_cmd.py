"""``robust-kd models``: the model zoo with sizes, or a closer look at one model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .output import print_json, print_line, print_table


@click.command()
@click.option("--num-classes", type=int, default=100, show_default=True,
              help="Classes of the head used for the counts (2 to 100,000).")
@click.option("--show", metavar="NAME|CHECKPOINT",
              help="Describe one model; for jpegdl_* models, draw its quantization tables "
                   "(the newest run's when there is one).")
@click.option("--runs-dir", default="runs", show_default=True, help="Where --show looks for runs of a model name.")
@click.option("--out", metavar="PNG", help="With --show: where to write the tables' heatmap.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(num_classes: int, show: str | None, runs_dir: str, out: str | None, as_json: bool) -> None:
    """List every architecture with its parameters and MACs at 32×32 (3 channels).

    Example: robust-kd models --show jpegdl_resnet8x4
    """
    from ..errors import UserError
    from ..models import create_model, list_models, model_complexity, model_family
    from ..models.registry import MAX_NUM_CLASSES

    if not 2 <= num_classes <= MAX_NUM_CLASSES:
        raise UserError(f"--num-classes must be from 2 to {MAX_NUM_CLASSES:,} (a head that large is already up to "
                        f"800 MB), got {num_classes}")
    if show is not None:
        show_model(show, num_classes, runs_dir, out, as_json)
        return
    rows = []
    for name in list_models():
        params, macs = model_complexity(create_model(name, num_classes), (3, 32, 32))
        rows.append({"name": name, "family": model_family(name), "parameters": params, "macs_32x32": macs})
    if as_json:
        print_json(rows)
        return
    print_table(
        f"robust-kd models ({num_classes} classes, MACs for one 3×32×32 image; jpegdl_* adds the JPEG layer)",
        ["name", "family", "params (M)", "MACs (M)"],
        [(r["name"], r["family"], f"{r['parameters'] / 1e6:.2f}", f"{r['macs_32x32'] / 1e6:.1f}") for r in rows],
        right=("params (M)", "MACs (M)"),
    )


def _resolve(show: str, num_classes: int, runs_dir: str) -> tuple[Any, str, Path | None]:
    """(model, where it came from, its run folder or None)."""
    from ..checkpoint import load_model
    from ..models import create_model, model_family
    from ..runs import latest_checkpoint

    path = Path(show)
    if path.suffix == ".pt" or path.is_file():
        run = path.parent.parent if path.parent.name == "checkpoints" else None
        return load_model(path), f"checkpoint {path}", run
    model_family(show)  # an unknown name fails here, with a suggestion
    checkpoint = latest_checkpoint(runs_dir, show)
    if checkpoint is not None:
        return load_model(checkpoint), f"newest run, {checkpoint}", checkpoint.parent.parent
    return create_model(show, num_classes), f"untrained (no run of {show} under {runs_dir}/)", None


def show_model(show: str, num_classes: int, runs_dir: str, out: str | None, as_json: bool) -> None:
    from ..jpeg import JpegLayer, standard_tables
    from ..jpeg.plot import plot_tables
    from ..models import model_complexity
    from ..paths import check_file

    model, source, run = _resolve(show, num_classes, runs_dir)
    params, macs = model_complexity(model, (model.in_channels, 32, 32))
    info: dict[str, Any] = {
        "arch": model.arch, "source": source, "num_classes": model.num_classes, "in_channels": model.in_channels,
        "parameters": params, "macs_32x32": macs,
        "children": [name for name, _ in model.net.named_children()],
    }
    layer = model.input_layer
    if isinstance(layer, JpegLayer):
        learned = layer.tables()
        standard = dict(zip(("luma", "chroma"), standard_tables(50)))
        panels = {}
        for kind, table in learned.items():
            panels[f"learned {kind}"] = table
            panels[f"standard {kind} (q=50)"] = standard[kind]
        png = Path(out) if out else (run / "jpeg_tables.png" if run else Path(f"{model.arch}_jpeg_tables.png"))
        check_file(png, "--out", suffix=".png")
        plot_tables(panels, png, title=f"{model.arch}: quantization tables ({source})")
        info["jpeg"] = {"options": layer.options(), "tables": {k: v.tolist() for k, v in learned.items()},
                        "standard_q50": {k: standard[k].tolist() for k in learned}, "heatmap": str(png)}
    if as_json:
        print_json(info)
        return
    print_line(f"{info['arch']}: {params / 1e6:.3f} M parameters, {macs / 1e6:.1f} M MACs at "
               f"{model.in_channels}×32×32, {model.num_classes} classes; {source}")
    print_line(f"layers: {'input_layer (JPEG) → ' if 'jpeg' in info else ''}"
               f"normalize → net[{', '.join(info['children'])}]")
    if "jpeg" in info:
        for kind, table in learned.items():
            ratio = float((table / standard[kind]).mean())
            print_table(f"{kind} table (mean ratio to the standard q=50 table: {ratio:.2f})",
                        [str(c) for c in range(8)],
                        [[f"{v:.1f}" for v in row] for row in table.tolist()], right=[str(c) for c in range(8)])
        print_line(f"heatmap: {info['jpeg']['heatmap']}")
