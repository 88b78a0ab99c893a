"""In-memory tensor datasets (digits, MNIST, Fashion-MNIST, MNIST-1D) as a :class:`~distill.tasks.base.Task`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from distill.core.evaluation import accuracy_on, sample_batch
from distill.core.method import BuildContext
from distill.data import DataSplits, load_dataset, random_shift
from distill.data.indexed import WithIndex, train_labels
from distill.models.registry import ModelContext

if TYPE_CHECKING:
    from distill.train.settings import TrainSettings

LATENCY_BATCH = 256


class TensorTask:
    """Classification on tensors: scored by accuracy on the fixed test split."""

    inputs = "tensor"
    cache_teacher = False  # jitter may change the inputs each epoch
    latency_repeats = 30

    def __init__(self, data: DataSplits) -> None:
        self.data = data
        self.name = data.name
        self.num_classes = data.num_classes
        self.train: TensorDataset = data.train

    def model_context(self, seed: int = 0, source: nn.Module | None = None) -> ModelContext:
        return ModelContext(self.num_classes, input_shape=self.data.input_shape, source=source, seed=seed)

    def eval_split(self) -> tuple[str, Dataset]:
        return self.data.eval_split

    def trainer_options(self, settings: TrainSettings, needs_index: bool = False) -> dict[str, Any]:
        jitter = functools.partial(random_shift, max_shift=settings.jitter) if settings.jitter else None
        return {"train_data": WithIndex(self.train) if needs_index else self.train, "input_transform": jitter}

    def sample_inputs(self, count: int = 8) -> Tensor:
        return sample_batch(self.train, count)

    def score(self, model: nn.Module) -> float:
        return accuracy_on(model, self.data.test)

    def scores(self, model: nn.Module) -> dict[str, float]:
        held_out = {"val": accuracy_on(model, self.data.val)} if self.data.val is not None else {}
        return {"test": self.score(model), **held_out}

    def latency_probe(self) -> Tensor:
        return sample_batch(self.data.test, LATENCY_BATCH)

    def artefact_inputs(self) -> Tensor:
        return self.data.test.tensors[0][:512]

    def build_context(self) -> BuildContext:
        labels = train_labels(self.data)
        return BuildContext(num_examples=len(self.train), num_classes=self.num_classes, train_labels=labels)

    def with_train(self, indices: Sequence[int] | None = None, labels: bool = True) -> TensorTask:
        inputs, targets = self.train.tensors[:2]
        if indices is not None:
            chosen = torch.as_tensor(list(indices), dtype=torch.long)
            inputs, targets = inputs[chosen], targets[chosen]
        if not labels:
            targets = torch.full_like(targets, -100)  # ignored by every loss: nothing can leak
        return TensorTask(dataclasses.replace(self.data, train=TensorDataset(inputs, targets)))

    def with_unlabeled(self) -> TensorTask:
        return self  # tensor datasets bring no separate unlabelled data

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "metric": "accuracy",
            "metric_label": "test accuracy",
            "train_examples": len(self.train),
            "evaluation_examples": len(self.data.test),
            "latency_probe": f"batch of {LATENCY_BATCH}",
            "input_shape": list(self.data.input_shape),  # what `distill export` rebuilds the model for
            "num_classes": self.num_classes,
        }


def load_tensor_task(recipe: Any, data_dir: str | None = None) -> TensorTask:
    spec = recipe.data
    data = load_dataset(spec.dataset, data_dir or spec.data_dir, spec.val_size, spec.train_subset, spec.split_seed)
    if spec.eval_subset:
        test = _first_seeded(data.test, spec.eval_subset, spec.split_seed)
        val = _first_seeded(data.val, spec.eval_subset, spec.split_seed) if data.val is not None else None
        data = dataclasses.replace(data, test=test, val=val)
    return TensorTask(data)


def _first_seeded(split: TensorDataset, count: int, seed: int) -> TensorDataset:
    """``count`` examples of ``split`` drawn with ``seed`` (all of them if it has fewer)."""
    if count >= len(split):
        return split
    chosen = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return TensorDataset(*(tensor[chosen] for tensor in split.tensors))
