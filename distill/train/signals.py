"""SIGTERM and SIGINT end training cleanly: the current optimizer step finishes, a checkpoint is written,
and the run stops with a message saying how to resume. A second signal stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint; ``signal_number`` says which."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number


class StopRequest:
    """Set by a signal handler, read by the loop after each optimizer step."""

    def __init__(self) -> None:
        self.signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number else ""


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Catch SIGTERM/SIGINT for the block (main thread only; elsewhere signals keep their handlers)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def handle(number: int, frame: object) -> None:
        request.signal_number = number
        for each, handler in previous.items():  # a second signal acts as it would have without us
            signal.signal(each, handler)

    for number in STOP_SIGNALS:
        signal.signal(number, handle)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
