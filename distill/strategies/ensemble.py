"""Ensemble teachers (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", section 3).

An ensemble of N models (different seeds, or different architectures) is a better teacher than
any one of them; distillation compresses it into one student. :class:`EnsembleTeacher` is an
ordinary ``nn.Module`` whose output is the combined logits, so the Distiller, the KD losses and
the evaluation code use it unchanged::

    probability space:  z = log Σ_n w_n softmax(z_n)      (softmax(z) is the averaged distribution)
    logit space:        z = Σ_n w_n z_n

with weights ``w_n >= 0`` normalised to sum to 1 (equal by default). Averaging probabilities is
what the paper does for its speech ensemble; averaging logits is the geometric mean of the
distributions (up to normalisation). Feature matches are not defined for an ensemble (whose
layer would it be?), so use it as a response-level teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.core.batch import Inputs, call_model, logits_of
from distill.core.distiller import SupervisedObjective
from distill.models.registry import AnyModelSpec
from distill.strategies.context import RunContext, TeacherModel, checkpoint_weights, weights_of
from distill.train.checkpoint import load_module_weights
from distill.train.settings import StrictModel

EnsembleSpace = Literal["probability", "logits"]


class EnsembleTeacher(nn.Module):
    """Combine the logits of ``members`` by a weighted mean in probability or logit space."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        space: EnsembleSpace = "probability",
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member model")
        if space not in ("probability", "logits"):
            raise ValueError(f"ensemble space must be 'probability' or 'logits', got {space!r}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members):
            raise ValueError(f"ensemble weights: got {len(weights)} weights for {len(members)} members")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"ensemble weights must be >= 0 with a positive sum, got {weights}")
        self.members = nn.ModuleList(members)
        self.space = space
        total = sum(weights)
        self.register_buffer("weights", torch.tensor([w / total for w in weights]), persistent=False)

    def member_logits(self, inputs: Inputs) -> list[Tensor]:
        """Every member's logits, in order."""
        outputs = [logits_of(call_model(member, inputs)) for member in self.members]
        shapes = {tuple(output.shape) for output in outputs}
        if len(shapes) > 1:
            raise ValueError(f"ensemble members disagree on the output shape: {[tuple(o.shape) for o in outputs]}")
        return outputs

    def forward(self, inputs: Inputs | None = None, **named_inputs: Tensor) -> Tensor:
        logits = torch.stack(self.member_logits(inputs if inputs is not None else named_inputs))
        weights = self.weights.to(logits.dtype).view(-1, *([1] * (logits.dim() - 1)))
        if self.space == "logits":
            return (weights * logits).sum(0)
        # log Σ w_n p_n computed as logsumexp(log w_n + log p_n): exact even where p_n underflows.
        return torch.logsumexp(weights.log() + torch.log_softmax(logits, dim=-1), dim=0)


class EnsembleSpec(StrictModel):
    """``teacher.ensemble``: ``members`` copies of teacher.model (seeds teacher.seed, +1, ...) or one member
    per architecture in ``models``; ``checkpoints`` (one weights file or folder per member) loads trained
    members instead of training them. Combined in ``space`` with ``weights`` (default equal)."""

    members: int = Field(1, ge=1)
    models: list[AnyModelSpec] = Field(default_factory=list)
    checkpoints: list[str] = Field(default_factory=list)
    space: Literal["probability", "logits"] = "probability"
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleSpec:
        if self.models and self.members not in (1, len(self.models)):
            raise ValueError(f"give members ({self.members}) or models ({len(self.models)} listed), not both")
        count = self.size
        if self.weights is not None and (len(self.weights) != count or any(w < 0 for w in self.weights)):
            raise ValueError(f"weights: need {count} numbers >= 0 (one per member), got {self.weights}")
        if self.checkpoints and len(self.checkpoints) != count:
            raise ValueError(f"checkpoints: need one per member ({count}), got {len(self.checkpoints)}")
        return self

    @property
    def size(self) -> int:
        return len(self.models) or self.members

    def train(self, context: RunContext) -> TeacherModel:
        """Train (or load) every member into ``<out>/teacher/member-<n>``; one row per member."""
        teacher = context.recipe.teacher
        task = context.teacher_task or context.task
        members, rows, weights = [], [], []
        for number in range(self.size):
            seed = teacher.seed + number
            member = context.build(self.models[number] if self.models else teacher.model, seed, task=task)
            run_dir = None
            if self.checkpoints:
                load_module_weights(member, self.checkpoints[number])
                weights.append(checkpoint_weights(self.checkpoints[number]))
            else:
                run_dir = context.out / "teacher" / f"member-{number}"
                context.train(
                    SupervisedObjective(member), run_dir, seed, f"teacher {number}", role="teacher", task=task
                )
                weights.append(weights_of(run_dir))
            rows.append(context.row("member", seed, member, run_dir, index=number))
            members.append(member)
        return TeacherModel(EnsembleTeacher(members, self.space, self.weights), weights, rows)
