"""Datasets that also yield each example's index, for methods with per-example state (CRD's memory bank)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from distill.data.datasets import DataSplits


class WithIndex(Dataset):
    """Wrap a dataset of ``(inputs, labels)`` so that it yields ``(inputs, labels, index)``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple:
        inputs, labels = self.dataset[index][:2]
        return inputs, labels, index


def train_labels(data: DataSplits) -> Tensor | None:
    """The label of every training example, when the training set is an in-memory TensorDataset."""
    train = data.train
    if isinstance(train, TensorDataset) and len(train.tensors) >= 2:
        return train.tensors[1].to(torch.long)
    return None
