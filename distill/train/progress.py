"""A rich progress bar with the live loss terms, plus one summary line per epoch.

When the output is not a terminal (a log file, CI, ``nohup``) a bar cannot redraw, so every
``line_every`` batches one plain line says where training is: epoch, step, the loss terms, throughput
and the time left.
"""

from __future__ import annotations

import time
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

    def __init__(
        self,
        description: str,
        epochs: int,
        batches_per_epoch: int,
        enabled: bool = True,
        line_every: int = 50,
        plain: bool | None = None,
        f1_label: str = "F1",
    ) -> None:
        self.description = description
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.enabled = enabled
        self.line_every = line_every
        self.f1_label = f1_label  # what the task's F1 is: "entity F1" (tagging), "micro F1" (multi-label)
        self.plain = enabled and (not console.is_terminal if plain is None else plain)
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
        self.examples_seen = 0
        self.epoch = 0
        self.epoch_started = time.perf_counter()
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
        self.batches_seen = self.examples_seen = 0
        self.epoch, self.epoch_started = epoch, time.perf_counter()
        self.running = {}

    def advance(self, values: dict[str, float], examples: int = 0, step: int | None = None) -> None:
        # An exponential moving average keeps the displayed terms readable on small batches.
        self.batches_seen += 1
        self.examples_seen += examples
        for name, value in values.items():
            previous = self.running.get(name, value)
            self.running[name] = 0.9 * previous + 0.1 * value if self.batches_seen > 1 else value
        self.progress.update(self.task, advance=1, terms=format_terms(self.running))
        if self.plain and self.batches_seen % self.line_every == 0:
            console.print(self.status_line(step), highlight=False, soft_wrap=True)

    def status_line(self, step: int | None = None) -> str:
        """Where training is, for logs: epoch, batch (and optimizer step), loss terms, throughput, time left."""
        elapsed = max(time.perf_counter() - self.epoch_started, 1e-9)
        left = (self.batches_per_epoch - self.batches_seen) + (self.epochs - self.epoch - 1) * self.batches_per_epoch
        eta = left * elapsed / max(self.batches_seen, 1)
        where = f" step {step}" if step is not None else ""
        return (
            f"{self.description} epoch {self.epoch + 1}/{self.epochs} batch {self.batches_seen}/"
            f"{self.batches_per_epoch}{where}  {format_terms(self.running)}  "
            f"{self.examples_seen / elapsed:.1f} examples/s  ETA {_duration(eta)}"
        )

    def end_epoch(self, record: dict) -> None:
        if not self.enabled:
            return
        line = f"{self.description} epoch {record['epoch'] + 1}/{self.epochs}  train loss {record['train_loss']:.4f}"
        if "eval_f1" in record:  # tagging: entity F1 is the task's metric, token accuracy is mostly "O"
            line += f"  {record['eval_split']} {self.f1_label} {100 * record['eval_f1']:.2f}%"
        elif "eval_accuracy" in record:
            line += f"  {record['eval_split']} acc {100 * record['eval_accuracy']:.2f}%"
        self.progress.console.print(line + f"  ({record['seconds']:.1f}s)")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def notice(message: str) -> None:
    """One line for the user on stderr (a skipped checkpoint, a stop on a signal), never mixed into stdout."""
    console.print(f"[yellow]{message}[/yellow]", highlight=False, soft_wrap=True)
