"""A tiny training run for the fault-injection test.

``python -m tests.kill_run ROOT FOLDER=POINT ...`` imports torch once, then for each pair forks a child that
trains (resuming when ROOT/FOLDER holds checkpoints) with ``DISTILL_KILL_AT=POINT``, so that it SIGKILLs itself
there; pairs run in order, so a folder named twice is killed twice. It prints one JSON object: folder → how
each child ended (its signal number as a negative number, or its exit code)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.core.objective import SupervisedObjective
from distill.train import Trainer, TrainSettings
from distill.train.faults import KILL_VARIABLE

DATA = TensorDataset(torch.randn(40, 6, generator=torch.Generator().manual_seed(1)), torch.arange(40) % 3)
EVAL = (
    "validation",
    TensorDataset(torch.randn(12, 6, generator=torch.Generator().manual_seed(2)), torch.arange(12) % 3),
)
# 5 optimizer steps per epoch, 3 epochs; step checkpoints at steps 2, 4, 6, 8, 12, 14 and epoch ones at 5, 10, 15
SETTINGS = TrainSettings(epochs=3, batch_size=8, keep_checkpoints=2, checkpoint_every_steps=2)


def train(folder: str, resume: bool) -> dict[str, torch.Tensor]:
    """Train (or resume) the run in ``folder``; return the final weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))
    objective = SupervisedObjective(model)
    Trainer(objective, DATA, EVAL, SETTINGS, folder, seed=7, show_progress=False).fit(resume=resume)
    return model.state_dict()


def _killed_children(root: Path, pairs: list[str]) -> dict[str, list[int]]:
    # one whole run first, so that each child skips the lazy imports and set-up (2 s) of a first run; one
    # thread, so that no thread pool is running when the process forks
    torch.set_num_threads(1)
    train(str(root / ".warm-up"), resume=False)
    ended: dict[str, list[int]] = {}
    for pair in pairs:
        folder, _, point = pair.partition("=")
        child = os.fork()
        if child == 0:
            os.environ[KILL_VARIABLE] = point
            train(str(root / folder), resume=True)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        ended.setdefault(folder, []).append(code)
    return ended


if __name__ == "__main__":
    print(json.dumps(_killed_children(Path(sys.argv[1]), sys.argv[2:])))
