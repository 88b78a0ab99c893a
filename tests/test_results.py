"""results.json measurements: CPU latency is timed once per architecture."""

from __future__ import annotations

import torch
from torch import nn

import distill.run.results as results
from distill.models.multi_exit import ExitView, multi_exit_mlp
from distill.run.results import LatencyMeter


def test_latency_is_timed_once_per_architecture(monkeypatch):
    timed: list[nn.Module] = []
    monkeypatch.setattr(results, "cpu_latency_ms", lambda model, probe, repeats: timed.append(model) or len(timed))
    meter = LatencyMeter(torch.zeros(2, 8), repeats=1)
    first, twin, wider = nn.Linear(8, 3), nn.Linear(8, 3), nn.Linear(8, 5)
    network = multi_exit_mlp((8,), [6, 6], 3)
    shallow, deep = ExitView(network, 1), ExitView(network, 2)
    assert meter(first) == 1 and meter(twin) == 1  # same structure, other weights: one measurement
    assert meter(wider) == 2  # other shapes
    assert meter(shallow) == 3 and meter(deep) == 4 and meter(ExitView(network, 1)) == 3  # exits differ by depth
    assert timed == [first, wider, shallow, deep]
