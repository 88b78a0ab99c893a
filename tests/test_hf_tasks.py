"""Text tasks on the Trainer: dynamic padding, length-grouped batches, entity F1, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from distill.core.distiller import SupervisedObjective
from distill.models.hf.loading import load_tokenizer
from distill.tasks.text import GroupedBatches, tagging_metric
from distill.tasks.text_files import load_text_task
from distill.train import Trainer
from distill.train.settings import OptimizerSettings, TrainSettings
from tests.hf_models import tiny_bert
from tests.interrupt import killed_after_epoch


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def test_subset_is_seeded_and_items_carry_their_index(tokenizer):
    task = load_text_task("sst2", tokenizer, train_subset=50, subset_seed=3)
    again = load_text_task("sst2", tokenizer, train_subset=50, subset_seed=3)
    assert len(task.train) == 50 and task.info["train_total"] == 67349
    assert task.info["train_indices"] == again.info["train_indices"]
    assert int(task.train[7]["index"]) == 7
    assert set(task.evaluation) == {"dev"} and len(task.evaluation["dev"]) == 872


def test_grouped_batches_follow_the_generator():
    lengths = [int(n) for n in torch.randint(3, 40, (100,), generator=torch.Generator().manual_seed(0))]
    generator = torch.Generator()
    generator.manual_seed(5)
    first = list(GroupedBatches(lengths, 8, generator))
    generator.manual_seed(5)
    assert list(GroupedBatches(lengths, 8, generator)) == first  # the Trainer reseeds per epoch: same order
    assert sorted(i for batch in first for i in batch) == list(range(100))
    assert list(GroupedBatches(lengths, 8, generator)) != first  # next draw, next order


def test_tagging_metric_is_entity_f1_over_words():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    labels = torch.tensor([[-100, 1, 2, -100, 0, 3, -100]])  # [CLS] John Smith(+piece) in Rome [SEP]
    perfect = torch.nn.functional.one_hot(labels.clamp_min(0), 5).float()
    assert tagging_metric(names)([perfect], [labels])["f1"] == 1.0
    wrong_type = perfect.clone()
    wrong_type[0, 5] = torch.nn.functional.one_hot(torch.tensor(1), 5).float()  # Rome tagged B-PER
    scores = tagging_metric(names)([wrong_type], [labels])
    assert scores["precision"] == pytest.approx(0.5) and scores["recall"] == pytest.approx(0.5)


def _trainer(task, run_dir, epochs):
    model = tiny_bert("token", labels=task.num_labels, vocab_size=30522, max_position_embeddings=128)
    settings = TrainSettings(epochs=epochs, batch_size=16, optimizer=OptimizerSettings(lr=1e-3), log_every=1000)
    trainer = Trainer(
        SupervisedObjective(model),
        task.train,
        ("dev", task.evaluation["dev"]),
        settings,
        run_dir,
        show_progress=False,
        collate_fn=task.collate,
        train_sampler=task.batches(16),
        metric=task.metric,
    )
    return trainer, model


def test_tagging_trainer_logs_f1_and_resumes_exactly(tokenizer, tmp_path, monkeypatch):
    task = load_text_task("conll2003", tokenizer, train_subset=64, max_length=32)
    task.evaluation = {"dev": torch.utils.data.Subset(task.evaluation["dev"], range(64))}
    straight, model = _trainer(task, tmp_path / "straight", 2)
    straight.fit()
    record = json.loads((tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"eval_f1", "eval_precision", "eval_recall", "eval_accuracy"} <= set(record)

    with killed_after_epoch(monkeypatch, 0):
        _trainer(task, tmp_path / "resumed", 2)[0].fit()
    torch.manual_seed(123)  # another process state: resume must not depend on it
    resumed, resumed_model = _trainer(task, tmp_path / "resumed", 2)
    resumed.fit(resume=True)
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
