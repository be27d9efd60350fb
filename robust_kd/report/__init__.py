"""``robust-kd report``: one self-contained HTML page and a Markdown twin from results files alone.

    from robust_kd.report import write_report
    html_path, md_path = write_report(["runs/"], "runs/report")
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..fileio import atomic_open, write_text
from .build import build
from .collect import collect
from .document import render_html, render_markdown


def write_report(paths: Sequence[str | Path], out: str | Path, title: str = "robust-kd report") -> tuple[Path, Path]:
    """Write ``<out>/report.html`` and ``<out>/report.md`` (+ ``report_files/``); returns both paths."""
    out = Path(out)
    report = build(collect(list(paths)), title)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(report))
    markdown, files = render_markdown(report, "report_files")
    for name, png in files.items():
        with atomic_open(out / "report_files" / name) as f:
            f.write(png)
    write_text(md_path, markdown)
    return html_path, md_path


__all__ = ["write_report", "build", "collect", "render_html", "render_markdown"]
