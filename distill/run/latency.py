"""CPU latency that can be trusted: every model of a run timed interleaved, round after round.

Timing the teacher, then the students one after another lets a burst of other work on the machine land
on one model only (the same run gave speed-ups of 0.4x, 2.0x and 12.2x). Here each round times every
model once, in an order that rotates from round to round, so a busy spell slows them alike; the speed-up
is the median over rounds of the paired ratio (teacher's time / student's time in the same round). Rounds
go on until every median is stable (it moved less than ``tolerance`` over the last block of rounds) or
the budget is spent. The spread of each model (interquartile range over median) is reported, and when it
is large the measurement says the machine was busy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from distill.core.batch import Inputs, call_model

BUSY_SPREAD = 0.2  # an idle CPU repeats a forward pass within a few percent; 20% means other work ran


def quartile_spread(samples: Sequence[float]) -> float:
    """Interquartile range over median of ``samples`` (0 for fewer than two)."""
    if len(samples) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return (q3 - q1) / median if median > 0 else 0.0


@torch.inference_mode()
def interleaved_samples(
    models: Sequence[nn.Module],
    probe: Inputs,
    min_rounds: int = 10,
    max_rounds: int | None = None,
    budget_s: float = 30.0,
    tolerance: float = 0.02,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> list[list[float]]:
    """Seconds of one forward pass of each model on ``probe``, one sample per model per round.

    At least ``min_rounds`` rounds; then blocks of ``max(3, min_rounds // 2)`` more until no model's
    median moves by more than ``tolerance`` (relative) over a block, ``max_rounds`` (default
    ``10 * min_rounds``) is reached, or ``budget_s`` seconds have passed.
    """
    max_rounds = max_rounds or 10 * min_rounds
    modes = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        for _ in range(warmup):
            for model in models:
                call_model(model, probe)
        samples: list[list[float]] = [[] for _ in models]
        started, block, previous = clock(), max(3, min_rounds // 2), None
        target = min_rounds
        while True:
            while len(samples[0]) < target:
                _one_round(models, probe, samples, clock)
            medians = [statistics.median(values) for values in samples]
            stable = previous is not None and all(
                abs(now - before) <= tolerance * before for now, before in zip(medians, previous, strict=True)
            )
            if stable or target >= max_rounds or clock() - started >= budget_s:
                return samples
            previous, target = medians, min(max_rounds, target + block)
    finally:
        for model, mode in zip(models, modes, strict=True):
            model.train(mode)


def _one_round(models: Sequence[nn.Module], probe: Inputs, samples: list[list[float]], clock: Callable) -> None:
    shift = len(samples[0]) % len(models)  # rotate who goes first: no model always runs on a cold cache
    for position in range(len(models)):
        index = (position + shift) % len(models)
        begun = clock()
        call_model(models[index], probe)
        samples[index].append(clock() - begun)


def paired_speedup(reference: Sequence[float], model: Sequence[float]) -> float:
    """Median over rounds of ``reference[r] / model[r]``: both were timed in the same round."""
    return statistics.median(ref / mine for ref, mine in zip(reference, model, strict=True))


def busy_warning(spreads: dict[str, float], threshold: float = BUSY_SPREAD) -> str | None:
    """One sentence when any model's spread says the machine was busy while it was timed, else None."""
    worst = max(spreads, key=spreads.get, default=None)
    if worst is None or spreads[worst] <= threshold:
        return None
    return (
        f"latency is unreliable: the timings of {worst} spread by {100 * spreads[worst]:.0f}% between rounds "
        f"(interquartile range / median; an idle machine stays under {100 * threshold:.0f}%), so other work was "
        "running; `distill run RECIPE --out RUN_DIR --resume` on an idle machine times the finished models again"
    )
