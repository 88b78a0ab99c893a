"""The contract of a distillation method that owns parameters or state.

Most losses are plain functions (``distill.losses``). A method that needs trainable parts (VID's
variances, FT's paraphraser and translator, CRD's embedding heads) or state (CRD's memory bank)
is an :class:`MethodLoss` module instead, registered like a function (``@register("crd")``). The
Distiller builds one instance per feature match from the shapes seen on a probe batch and puts it
inside the trainable module, next to the connectors, so the optimiser, checkpoints, devices and
DDP treat it like any other trainable part and the training loop never special-cases it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

Shape = tuple[int, ...]


@dataclass
class BuildContext:
    """What a method may need when it is built, besides the feature shapes."""

    num_examples: int | None = None  # training-set size (CRD sizes its memory bank from it)
    num_classes: int | None = None
    train_labels: Tensor | None = None  # (num_examples,) class of every training example (CRD's negatives)
    teacher: nn.Module | None = None  # frozen; for methods that reuse a teacher layer (SRRL's classifier)


@dataclass
class StepContext:
    """What a method may need at each batch, besides the student and teacher features."""

    student_logits: Tensor
    teacher_logits: Tensor
    labels: Tensor | None = None
    index: Tensor | None = None  # dataset indices of the batch (needs_index methods get them)
    mask: Tensor | None = None
    step: int = 0
    total_steps: int | None = None


class MethodLoss(nn.Module):
    """A loss with parameters or state: ``forward(student, teacher, context) -> scalar``.

    Subclasses are constructed as ``cls(student_shape, teacher_shape, context, **options)``; the
    shapes include the batch dimension (lists of shapes for ``layer_lists`` losses), and
    ``options`` come from the recipe's ``options:`` mapping of the match.

    Class attributes declare what the method needs:

    * ``needs_index``: batches must carry dataset indices (the pipeline then yields them).
    * ``pretrain_needs_student``: the pre-training loss reads student features; when ``False``
      (FT trains its paraphraser on teacher features alone) the stage never runs the student,
      so its BatchNorm statistics stay untouched.
    """

    needs_index: ClassVar[bool] = False
    pretrain_needs_student: ClassVar[bool] = True

    def forward(self, student: Any, teacher: Any, context: StepContext) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def pretrain_loss(self, student: Any, teacher: Any, context: StepContext) -> Tensor:
        """The loss of the pre-training stage; by default the method's own loss."""
        return self(student, teacher, context)

    def end_pretrain(self) -> None:
        """Called once the pre-training stage is over (FT freezes its paraphraser here)."""


def is_method(loss: Any) -> bool:
    """True for a registered MethodLoss class, False for a plain loss function."""
    return isinstance(loss, type) and issubclass(loss, MethodLoss)
