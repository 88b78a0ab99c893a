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
from torch import Tensor, nn

from distill.core.batch import Inputs, call_model, logits_of

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
