"""What the sparse-from-scratch steps share (lottery tickets, SNIP, RigL): a fresh student of the run's
architecture, initialised from the run's seed, trained with its pruning masks kept applied, on labels
(``teacher: none``, as the papers do) or distilled from the run's teacher (``teacher: teacher``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.compress.base import CompressState, CompressStep
from distill.compress.masks import MaskedObjective
from distill.compress.recover import recovery_task


class FromScratch(CompressStep):
    """The fields of a step that trains the student's architecture again from its initialisation."""

    epochs: int = Field(1, ge=1)
    teacher: Literal["none", "teacher"] = "none"  # train on labels (the papers), or distil from the run's teacher
    skip: list[str] = Field(default_factory=list)  # module names kept dense

    def fresh_student(self, state: CompressState, seed: int | None = None) -> nn.Module:
        """The run's student architecture at its initialisation from ``seed`` (default: the run's seed)."""
        return state.context.build_student(state.seed if seed is None else seed, source=state.teacher)

    def data(self, state: CompressState) -> Any:
        """The training data: the labelled set, plus ``data.unlabeled`` when distilling."""
        return recovery_task(state) if self.teacher == "teacher" else state.task

    def objective(self, state: CompressState, model: nn.Module) -> Any:
        """Labels alone, or the recipe's distillation from the run's teacher."""
        if self.teacher == "teacher" and state.teacher is None:
            raise ValueError(f"compress {self.kind}: teacher: teacher, but this run has no trained teacher")
        teacher = state.teacher if self.teacher == "teacher" else None
        return state.context.objective(teacher, model, task=self.data(state))

    def masked(
        self,
        state: CompressState,
        model: nn.Module,
        masks: dict[str, Tensor],
        hooks: Sequence[Callable[[int, int | None], None]] = (),
    ) -> MaskedObjective:
        """The step's objective for ``model`` with ``masks`` kept applied after every optimizer step."""
        return MaskedObjective(self.objective(state, model), model, masks, hooks=hooks)

    def train_masked(
        self, state: CompressState, objective: MaskedObjective, folder: Path, label: str, index: int
    ) -> None:
        """Train for ``epochs`` into ``folder`` (resumable); ``objective.masks()`` are the masks at the end."""
        settings = state.context.recipe.student.train.model_copy(update={"epochs": self.epochs})
        torch.manual_seed(state.seed * 1_000 + index)  # dropout and data order: the seed and the step
        state.context.train(objective, folder, state.seed, label, settings=settings, task=self.data(state))
