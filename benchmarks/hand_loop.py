"""The hand-written training loop of ``benchmarks/overhead.py``: plain PyTorch, nothing of distill's Trainer."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader


def train_by_hand(
    student: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    generator: torch.Generator,
    settings: Any,
    folder: Path,
    loss_of: Callable[[Any], Tensor],
    seed: int = 0,
) -> int:
    """``settings.epochs`` epochs of ``loss_of(batch)``: the loader's order from ``generator`` reseeded per
    epoch as the Trainer does, the learning-rate schedule, clipping when ``settings.grad_clip``, a JSON line
    every ``log_every`` steps, the student's weights after each epoch. Returns the optimizer steps taken."""
    folder.mkdir(parents=True, exist_ok=True)
    total = math.ceil(len(loader)) * settings.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: settings.lr_schedule.factor(step, total))
    student.train()
    step = 0
    with open(folder / "log.jsonl", "w") as log:
        for epoch in range(settings.epochs):
            generator.manual_seed(seed * 100_003 + epoch)
            for batch in loader:
                loss = loss_of(batch)
                loss.backward()
                if settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(student.parameters(), settings.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
                step += 1
                if step % settings.log_every == 0:
                    log.write(json.dumps({"step": step, "loss": float(loss)}) + "\n")
            save_file(
                {name: tensor.contiguous() for name, tensor in student.state_dict().items()},
                str(folder / f"epoch-{epoch}.safetensors"),
            )
    return step
