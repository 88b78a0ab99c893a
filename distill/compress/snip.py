"""SNIP (``- {snip: {sparsity: 0.9, epochs: 10}}``): single-shot network pruning at initialisation by
connection sensitivity (Lee, Ajanthan & Torr 2019).

For each weight w_j with an auxiliary gate c_j = 1, the sensitivity is s_j = |∂L/∂c_j| = |w_j · ∂L/∂w_j|
on ``batches`` training batches (the paper: one batch), normalised s_j / Σ_k s_k (which does not change
the ranking); the ``sparsity`` fraction of lowest-sensitivity weights is removed at initialisation,
over all layers together (``scope: global``, the paper) or per layer, and the sparse network is trained
from there with its mask fixed. L is the cross-entropy on labels (``teacher: none``, the paper) or the
recipe's distillation loss from the run's teacher (``teacher: teacher``). The student is a fresh
initialisation of the run's student architecture (seed: the run's), not the distilled one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distill.compress.base import CompressState, register_step
from distill.compress.masks import apply_masks, masks_for, prunable_weights
from distill.compress.prune import first_order_scores
from distill.compress.recover import training_batches
from distill.compress.scratch import FromScratch


@register_step("snip")
class Snip(FromScratch):
    kind: Literal["snip"] = "snip"
    sparsity: float = Field(0.9, gt=0, lt=1)  # the fraction of prunable weights removed at initialisation
    scope: Literal["global", "layer"] = "global"
    batches: int = Field(1, ge=1)  # training batches the sensitivity is summed over

    def label(self) -> str:
        how = "distilled" if self.teacher == "teacher" else "labels"
        return f"SNIP {100 * self.sparsity:g}% sparse from scratch ({how})"

    def apply(self, state: CompressState, index: int) -> None:
        state.require_torch(self.kind)
        state.require_unshared(self.kind)
        state.keep_before()
        model = self.fresh_student(state)
        weights = prunable_weights(model, self.skip)
        if not weights:
            raise ValueError(f"compress snip: the model has no Linear or Conv weights outside skip {self.skip}")
        objective = self.objective(state, model)
        batch_size = state.context.recipe.student.train.batch_size
        batches = training_batches(state, batch_size, self.batches, task=self.data(state))
        trainable = objective.trainable  # the student, with a distillation's connectors
        losses = (objective.losses(trainable, batch)["total"] for batch in batches)
        masks = masks_for(first_order_scores(weights, losses), self.sparsity, self.scope)
        apply_masks(model, masks)
        folder = state.step_folder(index, self.kind)
        self.train_masked(state, self.masked(state, model, masks), folder, f"snip s{state.seed}", index)
        state.model = model
        state.masks.update(masks)
