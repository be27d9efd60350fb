"""``robust-kd report``: one self-contained HTML page and a Markdown twin from results files alone.

    from robust_kd.report import write_report
    html_path, md_path = write_report(["runs/"], "runs/report")
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from ..fileio import atomic_open, write_text
from .build import build
from .collect import ReportData, collect
from .document import render_html, render_markdown


def write_report(paths: Union[Sequence[str | Path], ReportData], out: str | Path,
                 title: str = "robust-kd report") -> tuple[Path, Path]:
    """Write ``<out>/report.html`` and ``<out>/report.md`` (+ ``report_files/``) from run folders and
    results files, or from data already collected; returns both paths."""
    out = Path(out)
    report = build(paths if isinstance(paths, ReportData) else collect(list(paths)), title)
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_html(report))
    markdown, files = render_markdown(report, "report_files")
    for name, png in files.items():
        with atomic_open(out / "report_files" / name) as f:
            f.write(png)
    for stale in (out / "report_files").glob("*.png"):       # figures of an earlier report of other runs
        if stale.name not in files:
            stale.unlink()
    write_text(md_path, markdown)
    return html_path, md_path


__all__ = ["write_report", "build", "collect", "render_html", "render_markdown"]
