"""Kill a training run right after it checkpoints an epoch, to test that resuming reproduces it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from distill.train import Trainer


@contextmanager
def killed_after_epoch(
    monkeypatch: pytest.MonkeyPatch, epoch: int, where: Callable[[str], bool] = lambda run_dir: True
) -> Iterator[None]:
    """Inside the block, a Trainer whose run folder satisfies ``where`` raises KeyboardInterrupt just after
    writing the checkpoint of ``epoch``; the block must end with that interruption."""
    original = Trainer._checkpoint

    def checkpoint_then_die(self, model, optimizer, scheduler, done_epoch, step, record, inside=None):
        folder = original(self, model, optimizer, scheduler, done_epoch, step, record, inside)
        if inside is None and done_epoch == epoch and where(str(self.run_dir)):
            raise KeyboardInterrupt(f"killed after epoch {epoch}")
        return folder

    monkeypatch.setattr(Trainer, "_checkpoint", checkpoint_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(Trainer, "_checkpoint", original)
