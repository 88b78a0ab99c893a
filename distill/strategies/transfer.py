"""Transfer sets (Hinton et al. 2015, section 2): what the student distils on.

``transfer: {labels: false}`` hides the labels of the distillation data (set to -100, ignored by every
loss), so the student learns from the teacher's soft targets alone; ``split: unseen`` gives the teacher
``teacher_share`` of the training set (drawn with ``data.split_seed``) and the students the rest, so they
learn on examples the teacher never saw. The hard-label baseline keeps its labels: it shows what the
labels the distilled student never saw would have been worth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from distill.tasks.base import Task
from distill.train.settings import StrictModel


class TransferSpec(StrictModel):
    """What the student distils on: the labelled train set (default), or data without labels."""

    labels: bool = True
    split: Literal["shared", "unseen"] = "shared"
    teacher_share: float = Field(0.5, gt=0, lt=1)

    @property
    def is_default(self) -> bool:
        return self.labels and self.split == "shared"


@dataclass
class TransferTasks:
    teacher: Task  # what the teacher trains on
    distil: Task  # what the distilled student sees (labels hidden with labels: false)
    student: Task  # the students' labelled share: baselines train on it, rows are scored with it


def transfer_tasks(task: Task, spec: TransferSpec, split_seed: int) -> TransferTasks:
    teacher = student = task
    if spec.split == "unseen":
        order = torch.randperm(len(task.train), generator=torch.Generator().manual_seed(split_seed)).tolist()
        cut = round(spec.teacher_share * len(order))
        if cut < 1 or cut >= len(order):
            raise ValueError(f"transfer.teacher_share {spec.teacher_share} leaves no examples for teacher or student")
        teacher, student = task.with_train(order[:cut]), task.with_train(order[cut:])
    distil = student if spec.labels else student.with_train(labels=False)
    return TransferTasks(teacher, distil.with_unlabeled(), student)  # + data.unlabeled, labels hidden


def check_no_transfer(recipe: Any, kind: str) -> None:
    if not recipe.transfer.is_default:
        raise ValueError(f"strategy {kind!r}: transfer sets apply to the offline strategy (teacher -> student)")
