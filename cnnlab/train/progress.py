"""The per-epoch progress bar (rich): steps, ETA, and loss/accuracy as of the last host sync point."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


class EpochProgress:
    """One bar per epoch. `advance()` per step costs no sync; `show(...)` sets the loss/acc text, called
    only where the trainer reads metrics anyway. Disabled (all methods no-ops) when quiet or not rank 0."""

    def __init__(self, enabled: bool = True, epochs: int = 1):
        self.enabled = enabled
        self.epochs = epochs
        self.console = Console(file=sys.stderr)
        if not self.console.is_terminal:
            # Logs and pipes get rich's 80-column default, which truncates the stats; a log can be wider.
            self.console = Console(file=sys.stderr, width=120)
        self.progress = None
        self.task = None
        if enabled:
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, transient=False)

    def __enter__(self) -> "EpochProgress":
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_epoch(self, epoch: int, total: int, done: int = 0) -> None:
        if self.progress is not None:
            self.task = self.progress.add_task("", total=total, completed=done,
                                               epoch=f"{epoch + 1}/{self.epochs}", stats="")

    def advance(self, n: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task, n)

    def show(self, **stats: float) -> None:
        if self.progress is not None and self.task is not None:
            text = "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
            self.progress.update(self.task, stats=text)

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(message)
