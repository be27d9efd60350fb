"""``robust-kd report``: the numbers and pictures of one or more runs in one HTML page (and Markdown)."""

from __future__ import annotations

from pathlib import Path

import click

from .output import print_line


@click.command(epilog="""\b
Examples:
  robust-kd report runs/                                  # every run under runs/, transfer matrices too
  robust-kd report runs/resnet8x4_embedded_quick_seed0 runs/jpegdl_resnet8x4_embedded_quick_seed0 --out cmp
""")
@click.argument("paths", nargs=-1, required=True, metavar="RUN_OR_FOLDER_OR_JSON...")
@click.option("--out", metavar="FOLDER", help="Where report.html and report.md go; default: <the first folder>/report.")
@click.option("--title", default="robust-kd report", show_default=True)
def report(paths: tuple[str, ...], out: str | None, title: str) -> None:
    """Write a self-contained HTML report (plots embedded, opens from disk) and its Markdown twin from the
    results files of run folders: training curves, teacher vs students, clean and robust accuracy with the
    attack that broke each point and the sanity flags, accuracy-vs-eps curves, transfer matrices, JPEG-DL
    tables, and RSA results."""
    from ..errors import UserError
    from ..paths import check_folder
    from ..report import collect, write_report

    first = Path(paths[0])
    folder = Path(out) if out else (first if first.is_dir() else first.parent) / "report"
    check_folder(folder, "--out", advice="give --out a folder for report.html and report.md")
    data = collect(list(paths))
    for line in data.skipped:
        print_line(f"left out {line}")
    try:
        html_path, md_path = write_report(data, folder, title)
    except OSError as err:
        raise UserError(f"cannot write the report to '{folder}' ({err.strerror or type(err).__name__}); "
                        "give a folder you can write to with --out") from None
    print_line(f"report: {html_path} (Markdown: {md_path})")
