"""What a student saves: parameters, bytes on disk, CPU latency per batch."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distill.core.batch import Inputs, as_batch, call_model, logits_of
from distill.train import evaluate


def accuracy_on(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Accuracy of ``model`` (in eval mode, on CPU) over ``dataset``."""
    was_training = model.training
    model.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        return evaluate(lambda inputs: logits_of(call_model(model, inputs)), loader)["accuracy"]
    finally:
        model.train(was_training)


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


def sample_batch(dataset: Dataset, batch_size: int) -> Tensor:
    """The first ``batch_size`` inputs of ``dataset`` as one tensor (the latency probe)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return as_batch(next(iter(loader))).inputs


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean, "std": std}
