"""Progress of a training run: a rich bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .. import console


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    terms = "  ".join(f"{k} {v:.4f}" for k, v in record["train_loss"].items())
    return (
        f"epoch {record['epoch']}/{epochs}  {terms}  train {100 * record['train_accuracy']:.2f}%  "
        f"test {100 * record['test_accuracy']:.2f}%  lr {record['lr']:.4g}  {record['images_per_s']:.0f} img/s"
    )


class Reporter:
    """Silent reporter; the base of the others (used by the Python API and tests)."""

    def start(self, title: str, epochs: int, first_epoch: int) -> None: ...
    def start_epoch(self, epoch: int, steps: int) -> None: ...
    def update(self, steps_done: int, stats: dict[str, float]) -> None: ...
    def end_epoch(self, record: dict[str, Any], epochs: int) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class PlainReporter(Reporter):
    """One line per epoch on stderr: readable in logs and when piped."""

    def start(self, title: str, epochs: int, first_epoch: int) -> None:
        where = f"resuming after epoch {first_epoch}" if first_epoch else "starting"
        console.stderr().print(f"{title}: {where}, {epochs} epochs", markup=False)

    def end_epoch(self, record: dict[str, Any], epochs: int) -> None:
        console.stderr().print(epoch_line(record, epochs), markup=False)

    def message(self, text: str) -> None:
        console.stderr().print(text, markup=False)


class RichReporter(PlainReporter):
    """A live bar for the current epoch with loss, accuracy and images/s, plus a line per epoch."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console.stderr(),
            transient=True,
        )
        self.task: Any = None
        self.epochs = 0

    def start(self, title: str, epochs: int, first_epoch: int) -> None:
        super().start(title, epochs, first_epoch)
        self.epochs = epochs
        self.progress.start()

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}/{self.epochs}", total=steps, stats="")

    def update(self, steps_done: int, stats: dict[str, float]) -> None:
        text = f"loss {stats['loss']:.4f}  acc {100 * stats['accuracy']:.1f}%  {stats['images_per_s']:.0f} img/s"
        self.progress.update(self.task, completed=steps_done, stats=text)

    def end_epoch(self, record: dict[str, Any], epochs: int) -> None:
        self.progress.console.print(epoch_line(record, epochs), markup=False)

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def close(self) -> None:
        self.progress.stop()


def default_reporter() -> Reporter:
    return RichReporter() if console.interactive() else PlainReporter()
