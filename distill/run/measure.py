"""What a student saves: parameters, bytes on disk, CPU latency per batch."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import nn

from distill.core.batch import Inputs, call_model
from distill.core.evaluation import accuracy_on, sample_batch

__all__ = ["accuracy_on", "cpu_latency_ms", "file_size", "mean_std", "sample_batch"]


@torch.inference_mode()
def cpu_latency_ms(model: nn.Module, sample: Inputs, repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of one forward pass on ``sample`` (one batch), in milliseconds, on CPU."""
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            call_model(model, sample)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            call_model(model, sample)
            timings.append(time.perf_counter() - started)
        return 1000 * statistics.median(timings)
    finally:
        model.train(was_training)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}
