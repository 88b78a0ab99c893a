"""What a user watches: a plain progress line when output is not a terminal, TensorBoard event files
through Accelerate's trackers (read back here), and the tracker refused with the package to install."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.utils.data import TensorDataset

from distill.core.distiller import SupervisedObjective
from distill.models import MLP
from distill.train import Trainer
from distill.train.progress import TrainingProgress
from distill.train.settings import TrainSettings


def _data():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(96, 6, generator=generator)
    labels = (inputs[:, 0] > 0).long()
    return TensorDataset(inputs, labels), ("validation", TensorDataset(inputs[:32], labels[:32]))


def _settings(**changes) -> TrainSettings:
    return TrainSettings.model_validate({"epochs": 2, "batch_size": 16, "log_every": 2, **changes})


def test_plain_progress_lines_say_step_terms_throughput_and_eta(capsys):
    progress = TrainingProgress("student", epochs=2, batches_per_epoch=4, enabled=True, line_every=2, plain=True)
    with progress:
        progress.start_epoch(0)
        for step in range(4):
            progress.advance({"total": 1.0 - 0.1 * step, "kd": 0.5}, examples=16, step=step + 1)
    lines = [line for line in capsys.readouterr().err.splitlines() if "batch" in line]
    assert len(lines) == 2
    pattern = r"student epoch 1/2 batch 2/4 step 2  total [\d.]+ kd 0\.5000  [\d.]+ examples/s  ETA \d+m\d\ds"
    assert re.fullmatch(pattern, lines[0]), lines[0]
    assert "batch 4/4 step 4" in lines[1]


def test_a_terminal_gets_the_bar_and_no_plain_lines(capsys):
    progress = TrainingProgress("student", epochs=1, batches_per_epoch=2, enabled=True, line_every=1, plain=False)
    with progress:
        progress.start_epoch(0)
        progress.advance({"total": 1.0}, examples=4)
    assert "examples/s" not in capsys.readouterr().err


def test_tensorboard_event_file_holds_the_logged_records(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, evaluation = _data()
    torch.manual_seed(0)
    model = MLP((6,), [8], 2)
    settings = _settings(log_with="tensorboard")
    Trainer(SupervisedObjective(model), train, evaluation, settings, tmp_path, show_progress=False).fit()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["event"] == "step"]
    epochs = [r for r in records if r["event"] == "epoch"]
    logged = {event.step: event.value for event in events.Scalars("step/total")}
    assert logged == {r["step"]: pytest.approx(r["total"], rel=1e-6) for r in steps} and len(logged) == 6
    accuracy = [(e.step, e.value) for e in events.Scalars("epoch/eval_accuracy")]
    assert accuracy == [(r["step"], pytest.approx(r["eval_accuracy"], rel=1e-6)) for r in epochs]
    assert "step/lr" in events.Tags()["scalars"] and "epoch/train_loss" in events.Tags()["scalars"]


def test_a_missing_tracker_package_is_named_before_training(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name))
    with pytest.raises(ValueError, match=r"needs the tensorboard package.*pip install 'distill\[tensorboard\]'"):
        _settings(log_with="tensorboard")
