"""A rich progress bar with the live loss terms, plus one summary line per epoch."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


def format_terms(values: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.4f}" for name, value in values.items())


class TrainingProgress:
    """``start_epoch`` / ``advance(loss_terms)`` / ``end_epoch(record)``; silent when disabled."""

    def __init__(self, description: str, epochs: int, batches_per_epoch: int, enabled: bool = True) -> None:
        self.description = description
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"),
            console=console,
            transient=True,
            disable=not enabled,
        )
        self.task = None
        self.batches_seen = 0
        self.running: dict[str, float] = {}

    def __enter__(self) -> TrainingProgress:
        self.progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.progress.__exit__(kind, error, traceback)

    def start_epoch(self, epoch: int) -> None:
        label = f"{self.description} {epoch + 1}/{self.epochs}"
        if self.task is None:
            self.task = self.progress.add_task(label, total=self.batches_per_epoch, terms="")
        else:
            self.progress.reset(self.task, total=self.batches_per_epoch, description=label, terms="")
        self.batches_seen = 0
        self.running = {}

    def advance(self, values: dict[str, float]) -> None:
        # An exponential moving average keeps the displayed terms readable on small batches.
        self.batches_seen += 1
        for name, value in values.items():
            previous = self.running.get(name, value)
            self.running[name] = 0.9 * previous + 0.1 * value if self.batches_seen > 1 else value
        self.progress.update(self.task, advance=1, terms=format_terms(self.running))

    def end_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        line = f"{self.description} epoch {record['epoch'] + 1}/{self.epochs}  train loss {record['train_loss']:.4f}"
        if "eval_f1" in record:  # tagging: entity F1 is the task's metric, token accuracy is mostly "O"
            line += f"  {record['eval_split']} entity F1 {100 * record['eval_f1']:.2f}%"
        elif "eval_accuracy" in record:
            line += f"  {record['eval_split']} acc {100 * record['eval_accuracy']:.2f}%"
        self.progress.console.print(line + f"  ({record['seconds']:.1f}s)")
