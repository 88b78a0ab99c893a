"""Evaluation: accuracy, mean cross-entropy and task metrics of a model's predictions over a loader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distill.core.batch import Inputs, as_batch, call_model, logits_of
from distill.losses.multilabel import is_multi_label, multilabel_bce_loss


def count_correct(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> tuple[int, int]:
    """(correct, counted) over labels that are not ``ignore_index``; logits (B, C) or (B, L, C).
    Multi-label rows count as correct when every class is (logit > 0 exactly where the label is 1)."""
    if is_multi_label(logits, labels):
        valid = labels[:, 0] != ignore_index
        exact = ((logits > 0) == (labels > 0.5)).all(dim=-1)
        return int(exact[valid].sum()), int(valid.sum())
    valid = labels != ignore_index
    predictions = logits.argmax(dim=-1)
    return int((predictions[valid] == labels[valid]).sum()), int(valid.sum())


# Extra evaluation metrics: called once with every batch's (logits, labels), returns named values.
Metric = Callable[[list[Tensor], list[Tensor]], dict[str, float]]


@torch.no_grad()
def evaluate(
    predict: Callable[[Inputs], Tensor],
    loader: DataLoader,
    gather: Callable[[Any], Any] | None = None,
    metric: Metric | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``predict`` over ``loader`` (``gather`` joins DDP shards).

    ``metric`` (e.g. entity F1 for tagging) adds its values, computed from all logits and labels.
    """
    correct = counted = 0
    loss_sum = 0.0
    kept_logits: list[Tensor] = []
    kept_labels: list[Tensor] = []
    for raw in loader:
        batch = as_batch(raw)
        logits = predict(batch.inputs).float()
        labels = batch.labels
        if metric is None and not is_multi_label(logits, labels):
            # reduced per example before any gather: under DDP three numbers per example cross processes,
            # not (B, L, vocabulary) logits (gigabytes for a language model)
            stats = _example_stats(logits, labels)
            if gather is not None:
                stats = gather(stats)  # gather_for_metrics drops the sampler's repeated examples by row
            correct, counted = correct + int(stats[:, 0].sum()), counted + int(stats[:, 1].sum())
            loss_sum += float(stats[:, 2].sum())
            continue
        if gather is not None:
            logits, labels = gather((logits, labels))
        if metric is not None:
            kept_logits.append(logits.cpu())
            kept_labels.append(labels.cpu())
        batch_correct, batch_counted = count_correct(logits, labels)
        correct, counted = correct + batch_correct, counted + batch_counted
        loss_sum += _summed_loss(logits, labels)
    if counted == 0:
        raise ValueError("the evaluation data has no labelled example")
    extra = metric(kept_logits, kept_labels) if metric is not None else {}
    return {"accuracy": correct / counted, "loss": loss_sum / counted, "examples": counted, **extra}


def _example_stats(logits: Tensor, labels: Tensor) -> Tensor:
    """(B, 3) float64 per example: correct predictions, labelled positions, summed cross-entropy."""
    rows = labels.shape[0]
    valid = labels != -100
    correct = ((logits.argmax(dim=-1) == labels) & valid).reshape(rows, -1).sum(dim=1)
    losses = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    summed = losses.reshape(rows, -1).double().sum(dim=1)
    return torch.stack([correct.double(), valid.reshape(rows, -1).sum(dim=1).double(), summed], dim=1)


def _summed_loss(logits: Tensor, labels: Tensor) -> float:
    """The hard loss summed over labelled examples (positions): CE, or for multi-label the mean BCE of
    each labelled row's classes."""
    if is_multi_label(logits, labels):  # the training loss (a mean over rows and classes) times the rows
        return float(multilabel_bce_loss(logits, labels)) * int((labels[:, 0] != -100).sum())
    return float(
        nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
    )


def accuracy_on(model: nn.Module, dataset: Dataset, batch_size: int = 512) -> float:
    """Accuracy of ``model`` (in eval mode, on CPU) over ``dataset``."""
    was_training = model.training
    model.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        return evaluate(lambda inputs: logits_of(call_model(model, inputs)), loader)["accuracy"]
    finally:
        model.train(was_training)


def sample_batch(dataset: Dataset, batch_size: int) -> Tensor:
    """The first ``batch_size`` inputs of ``dataset`` as one tensor (the latency probe)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    return as_batch(next(iter(loader))).inputs
