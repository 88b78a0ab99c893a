"""results.json measurements: CPU latency timed interleaved, once per architecture, until stable, with
its spread and a warning when the machine was busy (a fake clock makes every figure exact)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import distill.run.results as results
from distill.models.multi_exit import ExitView, multi_exit_mlp
from distill.run.latency import busy_warning, interleaved_samples, paired_speedup, quartile_spread
from distill.run.results import LatencyMeter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Timed(nn.Module):
    """A model whose forward pass takes ``durations[call]`` seconds of the fake clock (the last repeats)."""

    def __init__(self, name: str, clock: Clock, durations: list[float], calls: list[str]) -> None:
        super().__init__()
        self.name, self.clock, self.durations, self.calls = name, clock, durations, calls
        self.count = 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.durations[min(self.count, len(self.durations) - 1)]
        self.count += 1
        self.calls.append(self.name)
        return inputs


def test_latency_is_timed_once_per_architecture(monkeypatch):
    timed: list[list[nn.Module]] = []

    def fake(models, probe, min_rounds):
        timed.append(list(models))
        return [[0.001 * (len(timed) * 10 + i)] * 3 for i in range(len(models))]

    monkeypatch.setattr(results, "interleaved_samples", fake)
    meter = LatencyMeter(torch.zeros(2, 8), repeats=1)
    first, twin, wider = nn.Linear(8, 3), nn.Linear(8, 3), nn.Linear(8, 5)
    network = multi_exit_mlp((8,), [6, 6], 3)
    shallow, deep = ExitView(network, 1), ExitView(network, 2)
    meter.measure([first, twin, wider])
    assert timed == [[first, wider]]  # same structure, other weights: one measurement
    assert meter(first) == meter(twin) == pytest.approx(10.0) and meter(wider) == pytest.approx(11.0)
    assert meter(shallow) == pytest.approx(20.0) and meter(deep) == pytest.approx(30.0)  # exits differ by depth
    assert meter(ExitView(network, 1)) == pytest.approx(20.0) and len(timed) == 3


def test_rounds_interleave_every_model_and_rotate_who_goes_first():
    clock, calls = Clock(), []
    models = [Timed(name, clock, [0.01], calls) for name in "abc"]
    samples = interleaved_samples(models, torch.zeros(1), min_rounds=4, warmup=1, clock=clock)
    rounds = [calls[i : i + 3] for i in range(3, len(calls), 3)]  # after one warm-up round
    assert all(sorted(one) == ["a", "b", "c"] for one in rounds)
    assert [one[0] for one in rounds[:3]] == ["a", "b", "c"]
    # constant times: stable at the first check, after min_rounds + one block of max(3, 4 // 2) rounds
    assert [len(s) for s in samples] == [7, 7, 7] and samples[0] == [pytest.approx(0.01)] * 7


def test_unstable_times_run_until_the_round_limit_or_the_budget():
    clock, calls = Clock(), []
    noisy = Timed("noisy", clock, [0.001 * (1 + (k * 7919) % 13) for k in range(1000)], calls)
    samples = interleaved_samples([noisy], torch.zeros(1), min_rounds=5, max_rounds=12, tolerance=0.0, clock=clock)
    assert len(samples[0]) == 12
    slow = Timed("slow", clock, [1.0], calls)
    samples = interleaved_samples([slow], torch.zeros(1), min_rounds=5, budget_s=7.5, tolerance=-1, clock=clock)
    assert len(samples[0]) == 8  # 5 rounds, then one block of 3: 8 s > 7.5 s of budget


def test_a_busy_spell_slows_both_models_of_a_round_and_leaves_the_paired_speedup_exact():
    busy = [1, 1, 5, 1, 9, 1, 1, 3, 1, 1]  # other work multiplies each round's times alike
    teacher = [0.004 * factor for factor in busy]
    student = [0.001 * factor for factor in busy]
    assert paired_speedup(teacher, student) == pytest.approx(4.0)
    assert quartile_spread(teacher) == pytest.approx((0.004 * 2.5 - 0.004) / 0.004)  # quartiles 1 and 2.5
    assert quartile_spread([0.002] * 5) == 0.0 and quartile_spread([0.002]) == 0.0


def test_a_large_spread_warns_that_the_machine_was_busy():
    assert busy_warning({"teacher": 0.05, "student": 0.1}) is None
    message = busy_warning({"the teacher": 0.05, "student, distilled": 0.6})
    assert "student, distilled spread by 60%" in message and "--resume" in message


def test_results_carry_spread_paired_speedups_and_the_warning(monkeypatch):
    from distill.strategies.rows import Row

    busy = [1.0, 1.0, 4.0, 1.0]
    fake = {8: [0.004 * f for f in busy], 3: [0.002 * f for f in busy]}  # keyed by hidden width

    def samples(models, probe, min_rounds):
        return [fake[model.out_features] for model in models]

    monkeypatch.setattr(results, "interleaved_samples", samples)
    teacher = type("T", (), {"model": nn.Linear(4, 8), "weights": []})()
    rows = [Row("baseline", 0, 0.5, nn.Linear(4, 3), None, None), Row("distilled", 0, 0.6, nn.Linear(4, 3), None, None)]
    out = results.summarise(rows, {"metric_label": "accuracy"}, torch.zeros(1, 4), {}, teacher, 0.7, repeats=4)
    assert [row["speedup"] for row in out["rows"]] == [pytest.approx(2.0)] * 2
    assert out["rows"][0]["cpu_latency_spread"] == pytest.approx(quartile_spread(fake[3]))
    assert out["latency"]["rounds"] == 4 and "spread by" in out["latency"]["warning"]
