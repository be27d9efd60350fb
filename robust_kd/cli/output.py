"""Tables and JSON on stdout: rich tables on a terminal, plain aligned text when piped."""

from __future__ import annotations

import json
from typing import Any, Sequence

from rich import box
from rich.table import Table

from .. import console


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = ()) -> None:
    out = console.stdout()
    table = Table(title=title, box=box.SIMPLE_HEAD if out.is_terminal else box.ASCII2, title_justify="left")
    for i, column in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(column, justify="right" if column in right else "left", no_wrap=not last)
    for row in rows:
        table.add_row(*(str(v) for v in row))
    out.print(table)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def print_line(text: str) -> None:
    console.stdout().print(text, markup=False)
