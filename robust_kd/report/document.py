"""A report as plain data (sections of text, tables and figures) and its two renderings: one
self-contained HTML page (figures embedded as base64 PNG, no network) and a Markdown twin whose
figures sit beside it in ``<name>_files/``."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..md_escape import inline, paragraph


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""
    sortable: bool = False        # in HTML, a click on a column's head sorts by it


@dataclass
class Figure:
    name: str            # file name in the Markdown twin's folder, e.g. "curves_resnet8.png"
    png: bytes
    caption: str = ""


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    blocks: list[Table | Figure] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]


CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } \
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.subtitle { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; color: #444; padding-bottom: 0.3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; } .flag { color: #a33; }
table.sortable th { cursor: pointer; } table.sortable th:hover { background: #e8e8e8; }
"""

# Sorts a table.sortable by the clicked column (numbers by value, "73.1 ± 0.2" by its mean; text after numbers);
# a second click reverses. Inline, so the page stays one offline file.
SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable').forEach(function (t) {
  t.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var rows = Array.from(t.querySelectorAll('tr')).slice(1), down = th.dataset.down !== '1';
      function key(r) { var s = r.children[col].textContent, v = parseFloat(s); return isNaN(v) ? s : v; }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                                               : (typeof x === 'number' ? -1 : 1);
        return down ? -c : c;
      });
      th.dataset.down = down ? '1' : '0';
      rows.forEach(function (r) { r.parentNode.appendChild(r); });
    });
  });
});
</script>"""


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value).rstrip("%"))
        return True
    except ValueError:
        return False


def render_html(report: Report) -> str:
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(report.title)}</h1>", f"<p class='subtitle'>{html.escape(report.subtitle)}</p>"]
    for section in report.sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for p in section.paragraphs:
            out.append(f"<p>{html.escape(p)}</p>")
        for block in section.blocks:
            if isinstance(block, Table):
                out.append("<table class='sortable'>" if block.sortable else "<table>")
                if block.caption:
                    out.append(f"<caption>{html.escape(block.caption)}</caption>")
                out.append("<tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in block.columns) + "</tr>")
                for row in block.rows:
                    cells = []
                    for v in row:
                        cls = " class='num'" if _is_number(v) else ""
                        cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
                    out.append("<tr>" + "".join(cells) + "</tr>")
                out.append("</table>")
            else:
                data = base64.b64encode(block.png).decode("ascii")
                out.append(f"<figure><img src='data:image/png;base64,{data}' "
                           f"alt='{html.escape(block.caption or block.name)}'>"
                           f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    if any(isinstance(b, Table) and b.sortable for s in report.sections for b in s.blocks):
        out.append(SORT_SCRIPT)
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def render_markdown(report: Report, files_dir: str) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the figure files it links to (relative to the Markdown file). Every text is
    escaped (:mod:`robust_kd.md_escape`) as the HTML page escapes it: a run name or a results field shows
    as typed, never as HTML, a link, or a broken table."""
    lines = [f"# {inline(report.title)}", "", f"_{inline(report.subtitle)}_", ""]
    files: dict[str, bytes] = {}
    for section in report.sections:
        lines += [f"## {inline(section.title)}", ""]
        for p in section.paragraphs:
            lines += [paragraph(p), ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += _markdown_table(block)
            else:
                path = f"{files_dir}/{block.name}"
                files[block.name] = block.png
                lines += [f"![{inline(block.caption or block.name)}]({path})", ""]
                if block.caption:
                    lines += [f"_{inline(block.caption)}_", ""]
    return "\n".join(lines), files


def _markdown_table(block: Table) -> list[str]:
    lines = [f"**{inline(block.caption)}**", ""] if block.caption else []
    lines.append("| " + " | ".join(inline(c) for c in block.columns) + " |")
    lines.append("|" + "|".join("---:" if block.rows and _is_number(block.rows[0][i]) else "---"
                                for i in range(len(block.columns))) + "|")
    lines += ["| " + " | ".join(inline(v) for v in row) + " |" for row in block.rows]
    return [*lines, ""]


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "", sortable: bool = False) -> Table:
    return Table(list(columns), [list(r) for r in rows], caption, sortable)
