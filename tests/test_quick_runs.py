"""What a user watches and quick runs: data.eval_subset, the warm-up warning, entity F1 in the epoch line."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.core.objective import SupervisedObjective
from distill.run.recipe import validate_recipe
from distill.tasks.registry import load_task
from distill.train import Trainer, TrainSettings
from distill.train.progress import TrainingProgress
from tests.hf_models import save_tiny_bert_folder


def test_eval_subset_keeps_a_seeded_part_of_each_evaluation_split(tmp_path):
    task = load_task(validate_recipe({"data": {"dataset": "digits", "eval_subset": 100}}))
    again = load_task(validate_recipe({"data": {"dataset": "digits", "eval_subset": 100}}))
    assert len(task.data.test) == 100 and torch.equal(task.data.test.tensors[0], again.data.test.tensors[0])
    assert len(task.train) == 1257  # training is untouched

    folder = save_tiny_bert_folder(tmp_path / "bert")
    rows = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(30))
    (tmp_path / "t.csv").write_text("text,label\n" + rows)
    raw = {
        "data": {"format": "csv", "train": str(tmp_path / "t.csv"), "test": str(tmp_path / "t.csv"), "eval_subset": 7},
        "teacher": {"model": {"kind": "hf", "path": folder}},
        "student": {"model": {"kind": "hf", "layers": 1}},
    }
    text = load_task(validate_recipe(raw))
    assert len(text.evaluation["test"]) == 7 and len(text.train) == 30


def test_a_warm_up_longer_than_the_run_is_warned_about(tmp_path):
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    settings = TrainSettings(epochs=1, batch_size=8, lr_schedule={"name": "linear", "warmup_steps": 50})
    trainer = Trainer(SupervisedObjective(nn.Linear(4, 2)), data, None, settings, tmp_path, show_progress=False)
    with pytest.warns(UserWarning, match=r"warmup_steps is 50 but the run has 2 steps"):
        trainer.fit()


def test_the_epoch_line_of_tagging_shows_entity_f1():
    from distill.tasks.text import tagging_metric

    # the Trainer names the F1 by the task's metric: entity F1 for tagging
    progress = TrainingProgress("student", epochs=2, batches_per_epoch=1, f1_label=tagging_metric(["O"]).label)
    record = {"epoch": 0, "train_loss": 0.5, "seconds": 1.0, "eval_split": "dev", "eval_accuracy": 0.97, "eval_f1": 0.4}
    with progress.progress.console.capture() as captured:
        progress.end_epoch(record)
    printed = captured.get()
    assert "dev entity F1 40.00%" in printed and "acc" not in printed
