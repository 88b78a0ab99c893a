"""Distillation recovery after a compression step (``- {distill: {epochs: 1}}``): the compressed model is
trained as a student of the model as it was before the step (``teacher: before``, the default) or of the
run's teacher (``teacher: teacher``), with the recipe's response loss, temperature and weights (feature
matches are left out: the compressed model's layers may no longer have the shapes they were paired
with). Pruned weights stay at zero throughout (:class:`~distill.compress.masks.MaskedObjective`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.masks import MaskedObjective
from distill.core.batch import as_batch


def recovery_task(state: CompressState) -> Any:
    """The data the student was distilled on: the labelled training set plus ``data.unlabeled``."""
    task = state.task
    return task.with_unlabeled() if hasattr(task, "with_unlabeled") else task


def training_batches(state: CompressState, batch_size: int, count: int, task: Any = None) -> Iterator[Any]:
    """The first ``count`` batches of ``task``'s training data (default: the recovery data) in order:
    importance scores, calibration."""
    task = task if task is not None else recovery_task(state)
    collate = task.trainer_options(state.context.recipe.student.train).get("collate_fn")
    loader = DataLoader(task.train, batch_size=batch_size, collate_fn=collate)
    for raw in itertools.islice(loader, count):
        yield as_batch(raw)


def recovery_teacher(state: CompressState, which: str) -> nn.Module:
    """The model before the last compressing step, or the run's teacher (``which``: before | teacher)."""
    teacher = state.before if which == "before" else state.teacher
    if teacher is None:  # nothing compressed yet, or a run without a teacher
        teacher = state.teacher if which == "before" else state.before
    if teacher is None:
        raise ValueError("compress: a distill step needs a teacher: the run's teacher, or an earlier compress step")
    return teacher


def recovery_objective(state: CompressState, teacher: nn.Module | None, task: Any) -> Any:
    """The recipe's response distillation from ``teacher`` to the current model, without feature matches
    (labels alone when ``teacher`` is None)."""
    context = state.context
    distill = context.recipe.distill.model_copy(update={"matches": []})
    return context.with_distill(distill).objective(teacher, state.model, task=task)


def steps_per_epoch(task: Any, batch_size: int) -> int:
    return max(1, math.ceil(len(task.train) / batch_size))


def train_recovery(
    state: CompressState,
    teacher: nn.Module | None,
    folder: Path,
    label: str,
    epochs: int,
    lr: float | None = None,
    schedule: Callable[[int], dict[str, Tensor] | None] | None = None,
    names: list[str] | None = None,
) -> None:
    """Distil the current model from ``teacher`` (None: train on labels) for ``epochs`` epochs into
    ``folder`` (resumable), the pruning masks kept applied (and changed by ``schedule`` after each step,
    over the parameters ``names``, for gradual pruning); ``state.masks`` are the masks at the end."""
    context = state.context
    base = context.recipe.student.train
    update: dict[str, Any] = {"epochs": epochs}
    if lr is not None:
        update["optimizer"] = base.optimizer.model_copy(update={"lr": lr})
    settings = base.model_copy(update=update)
    task = recovery_task(state) if teacher is not None else state.task
    # dropout and data order start from the seed and the step, not from whatever ran before in this process
    torch.manual_seed(state.seed * 1_000 + int(folder.name.split("-")[0]))
    from distill.compress.cluster import ClusterTies

    hooks = [ClusterTies(state.model, state.clusters)] if state.clusters else []
    inner = recovery_objective(state, teacher, task)
    objective = MaskedObjective(inner, state.model, state.masks, schedule, names, hooks)
    context.train(objective, folder, state.seed, label, settings=settings, task=task)
    state.masks.clear()
    state.masks.update({name: mask for name, mask in objective.masks().items() if not bool(mask.all())})


@register_step("distill")
class Recover(CompressStep):
    kind: Literal["distill"] = "distill"
    epochs: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)  # default: the student's train.optimizer.lr
    teacher: Literal["before", "teacher"] = "before"

    def label(self) -> str:
        source = "the model before" if self.teacher == "before" else "the teacher"
        return f"distill {self.epochs} ep from {source}"

    def apply(self, state: CompressState, index: int) -> None:
        state.require_torch(self.kind)
        folder = state.step_folder(index, self.kind)
        teacher = recovery_teacher(state, self.teacher)
        train_recovery(state, teacher, folder, f"recover s{state.seed}", self.epochs, self.lr)
