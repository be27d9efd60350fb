"""Tables and JSON on stdout (rich tables on a terminal, plain aligned text when piped), and step
progress on stderr."""

from __future__ import annotations

import json
from typing import Any, Sequence

from rich import box
from rich.table import Table

from .. import console


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                right: Sequence[str] = ()) -> None:
    out = console.stdout()
    if not out.is_terminal:
        _print_plain_table(title, columns, rows, right)
        return
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
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


def _print_plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str]) -> None:
    """Aligned plain text, never truncated: for pipes, logs and files."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    print(title)
    for n, row in enumerate(cells):
        parts = []
        for i, value in enumerate(row):
            last = i == len(row) - 1
            if columns[i] in right:
                parts.append(value.rjust(widths[i]))
            else:
                parts.append(value if last else value.ljust(widths[i]))
        print("  ".join(parts).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


class StepProgress:
    """One rich bar per named step (activations, bootstrap, permutations, attacks); a line per step when piped."""

    def __init__(self) -> None:
        self.bar = None
        self.tasks: dict[str, Any] = {}
        if console.interactive():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console.stderr())
            self.bar.start()

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.bar is not None:
            if label not in self.tasks:
                self.tasks[label] = self.bar.add_task(label, total=max(total, 1))
            self.bar.update(self.tasks[label], completed=done)
        elif done >= total:
            console.stderr().print(f"{label}: done ({total})", markup=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
