"""The objective protocol: what the Trainer calls, whatever is being trained.

An objective owns ``trainable`` (the one nn.Module handed to Accelerate/DDP) and computes named loss
terms; the Trainer never asks which method or strategy it is (PyTorch Lightning's ``training_step`` is
declared the same way). :class:`SupervisedObjective` trains on labels; :class:`~distill.core.distiller.Distiller`
distils; strategies bring their own (mutual learning, BYOT, Theseus, trees).

Pre-training stages: parts of a method that train before distillation proper.
RepDistiller trains AB's and FSP's student layers (with their connectors) on the method's loss
alone for some epochs before the main run, and FT pre-trains its paraphraser as an auto-encoder
of the teacher's features. A method declares this (its loss's ``stage``/``pretrain_epochs``, or a
:class:`~distill.core.method.MethodLoss` with ``pretrain_loss``); the Distiller turns it into a
:class:`Stage`, and the Trainer runs every stage, with its own checkpoints and resume, before the
main loop. The training loop itself knows nothing about any method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from distill.core.batch import Batch, Inputs, call_model, logits_of
from distill.losses import hard_ce_loss


@runtime_checkable
class Objective(Protocol):
    """``trainable``: the module optimised; ``losses``: named terms plus ``total``; ``predict``: logits for
    evaluation; ``parts``: the modules a checkpoint saves (``model`` loads into the bare network); ``to``:
    moves what lives outside ``trainable`` (a teacher). Optional: ``stages()`` -> pre-training
    :class:`Stage` s, and ``needs_index`` (batches carry each example's index)."""

    trainable: nn.Module

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]: ...

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor: ...

    def parts(self, model: nn.Module) -> dict[str, nn.Module]: ...

    def to(self, device: torch.device) -> Objective: ...


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


class SupervisedObjective:
    """Plain training on labels (a teacher, or a student baseline): total = CE(logits, labels)."""

    def __init__(self, model: nn.Module) -> None:
        self.trainable = model

    def to(self, device: torch.device) -> SupervisedObjective:
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of(call_model(model, inputs))

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        logits = logits_of(call_model(model, batch.inputs))
        loss = hard_ce_loss(logits, batch.labels)
        return {"hard_ce": loss, "total": loss}
