"""The Trainer: exact resume, NaN stops with the last good checkpoint kept, accumulation, logs."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch.utils.data import TensorDataset

from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.data import random_shift
from distill.models import MLP
from distill.train import NonFiniteLossError, Trainer
from distill.train.checkpoint import load_module_weights
from distill.train.resume import latest_checkpoint
from distill.train.settings import TrainSettings
from tests.interrupt import killed_after_epoch


@pytest.fixture(scope="module")
def small_digits(digits):
    images, labels = digits.train.tensors
    return TensorDataset(images[:320], labels[:320]), (
        "test",
        TensorDataset(*(t[:200] for t in digits.test.tensors)),
    )


def _settings(**changes) -> TrainSettings:
    base = {
        "epochs": 3,
        "batch_size": 32,
        "optimizer": {"name": "adamw", "lr": 0.03},
        "lr_schedule": {"name": "cosine", "warmup_steps": 3},
        "log_every": 2,
        "keep_checkpoints": 3,
    }
    return TrainSettings.model_validate({**base, **changes})


def _distiller(teacher):
    torch.manual_seed(1)
    student = MLP((1, 8, 8), [16], 10, dropout=0.2)
    return Distiller(
        teacher,
        student,
        "kd",
        2.0,
        hard_weight=0.5,
        matches=[FeatureMatch("relu1", "relu1", connector="linear")],
        sample_inputs=torch.rand(4, 1, 8, 8),
    )


def _trainer(objective, data, run_dir, settings):
    train, evaluation = data
    return Trainer(
        objective,
        train,
        evaluation,
        settings,
        run_dir,
        seed=7,
        show_progress=False,
        input_transform=functools.partial(random_shift, max_shift=1),
    )


def test_resume_after_a_kill_ends_with_the_same_weights(tmp_path, small_digits, monkeypatch):
    teacher = MLP((1, 8, 8), [32], 10, dropout=0.3)
    settings = _settings(max_norm=2.0, grad_clip=1.0)

    uninterrupted = _distiller(teacher)
    _trainer(uninterrupted, small_digits, tmp_path / "a", settings).fit()

    interrupted = _distiller(teacher)
    with killed_after_epoch(monkeypatch, 1):
        _trainer(interrupted, small_digits, tmp_path / "b", settings).fit()

    torch.manual_seed(123)  # a different process state: resume must not depend on it
    resumed = _distiller(teacher)
    _trainer(resumed, small_digits, tmp_path / "b", settings).fit(resume=True)

    final_a = uninterrupted.trainable.state_dict()
    final_b = resumed.trainable.state_dict()
    assert final_a.keys() == final_b.keys()
    for name in final_a:
        assert torch.equal(final_a[name], final_b[name]), name
    epochs_logged = [
        json.loads(line)["epoch"]
        for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "epoch"
    ]
    assert epochs_logged == [0, 1, 2]


def test_resume_of_a_finished_run_returns_its_final_record(tmp_path, small_digits):
    model = MLP((1, 8, 8), [8], 10)
    first = _trainer(SupervisedObjective(model), small_digits, tmp_path, _settings(epochs=1)).fit()
    again = _trainer(SupervisedObjective(MLP((1, 8, 8), [8], 10)), small_digits, tmp_path, _settings(epochs=1))
    assert again.fit(resume=True) == first


class NaNAfter:
    """Wrap an objective so that its loss turns NaN from optimizer step ``step`` on."""

    def __init__(self, objective, step):
        self.objective, self.step = objective, step
        self.trainable = objective.trainable

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def losses(self, model, batch, step=0, total_steps=None):
        terms = self.objective.losses(model, batch, step, total_steps)
        if step >= self.step:
            terms["total"] = terms["total"] * float("nan")
        return terms


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, small_digits):
    model = MLP((1, 8, 8), [8], 10)
    trainer = _trainer(NaNAfter(SupervisedObjective(model), step=12), small_digits, tmp_path, _settings())
    with pytest.raises(NonFiniteLossError, match=r"step 12 \(epoch 1\).*hard_ce=.*epoch-0000") as error:
        trainer.fit()
    assert "--resume" in str(error.value)
    folder = latest_checkpoint(tmp_path / "checkpoints")
    assert folder.name == "epoch-0000"
    bare = MLP((1, 8, 8), [8], 10)
    load_module_weights(bare, folder)
    assert all(torch.isfinite(p).all() for p in bare.parameters())


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, small_digits):
    def train(batch_size, accumulation, folder):
        torch.manual_seed(3)
        model = MLP((1, 8, 8), [16], 10)
        settings = _settings(
            epochs=1,
            batch_size=batch_size,
            grad_accum_steps=accumulation,
            optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.0},
        )
        Trainer(
            SupervisedObjective(model),
            small_digits[0],
            None,
            settings,
            tmp_path / folder,
            seed=5,
            show_progress=False,
        ).fit()
        return model

    large, accumulated = train(32, 1, "large"), train(16, 2, "accumulated")
    for a, b in zip(large.parameters(), accumulated.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_metrics_log_and_evaluation(tmp_path, small_digits):
    model = MLP((1, 8, 8), [32], 10)
    record = _trainer(SupervisedObjective(model), small_digits, tmp_path, _settings(epochs=6)).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    steps = [r for r in records if r["event"] == "step"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3, 4, 5] and epochs[-1] == record
    assert all({"lr", "hard_ce", "total", "step"} <= set(r) for r in steps) and steps[0]["step"] == 2
    assert record["eval_split"] == "test" and record["eval_accuracy"] > 0.6  # 6 epochs on 320 digits
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]


def test_throughput_is_the_median_of_the_epochs_and_absent_without_a_metrics_file(tmp_path):
    from distill.train.metrics_log import METRICS_FILE, append_record, training_throughput

    assert training_throughput(tmp_path) == {}
    for speed, tokens in ((100.0, 900.0), (300.0, 1500.0), (200.0, 1200.0)):
        append_record(
            tmp_path / METRICS_FILE, {"event": "epoch", "examples_per_second": speed, "tokens_per_second": tokens}
        )
    append_record(tmp_path / METRICS_FILE, {"event": "step", "examples_per_second": 1e9})  # not an epoch: ignored
    assert training_throughput(tmp_path) == {"train_examples_per_second": 200.0, "train_tokens_per_second": 1200.0}
