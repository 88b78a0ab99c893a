"""Pre-training stages: parts of a method that train before distillation proper.

RepDistiller trains AB's and FSP's student layers (with their connectors) on the method's loss
alone for some epochs before the main run, and FT pre-trains its paraphraser as an auto-encoder
of the teacher's features. A method declares this (its loss's ``stage``/``pretrain_epochs``, or a
:class:`~distill.methods.base.MethodLoss` with ``pretrain_loss``); the Distiller turns it into a
:class:`Stage`, and the Trainer runs every stage, with its own checkpoints and resume, before the
main loop. The training loop itself knows nothing about any method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from distill.core.batch import Batch, Inputs

if TYPE_CHECKING:
    from distill.core.distiller import Distiller


@dataclass
class Stage:
    """A run of ``epochs`` epochs on ``objective`` before the main training; ``on_done`` runs after it."""

    name: str
    epochs: int
    objective: object
    on_done: Sequence[Callable[[], None]] = field(default_factory=list)

    def finish(self) -> None:
        for callback in self.on_done:
            callback()


class PretrainObjective:
    """Trains only the given matches of a Distiller, on their pre-training losses, summed by weight.

    The trainable module is the Distiller's own, so what this stage learns is what the main run
    starts from; parameters that no stage loss touches get no gradient and stay as they are.
    """

    def __init__(self, distiller: Distiller, indices: Sequence[int]) -> None:
        self.distiller = distiller
        self.indices = list(indices)
        self.trainable = distiller.trainable

    def to(self, device: torch.device) -> PretrainObjective:
        self.distiller.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return self.distiller.parts(model)

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return self.distiller.predict(model, inputs)

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        teacher_logits, teacher_features = self.distiller.teacher_outputs(batch.inputs, self.indices)
        context = self.distiller.step_context(batch, teacher_logits, step, total_steps)
        _, match_terms = model(batch.inputs, teacher_features, context, self.indices, True)
        terms: dict[str, Tensor] = {}
        total = teacher_logits.new_zeros(())
        for index in self.indices:
            match = self.distiller.built[index]
            terms[match.term_name] = match_terms[match.term_name]
            total = total + match.weight(step, total_steps) * terms[match.term_name]
        terms["total"] = total
        return terms
