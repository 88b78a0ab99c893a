"""Unstructured pruning (``- {prune: {method: magnitude, amount: 0.5, scope: global}}``).

One shot: the ``amount`` fraction of prunable weights (Linear and Conv weights; see
:mod:`distill.compress.masks`) with the lowest importance is set to zero, over all layers together
(``scope: global``) or in each layer alone (``layer``). Importance is |w| (``magnitude``; Han et al.
2015) or the first-order Taylor estimate of the loss change |w · ∂L/∂w| summed over ``batches``
training batches of the distillation loss from the run's teacher (``taylor``; Molchanov et al. 2017,
2019). Gradual (``schedule: {kind: cubic, steps: 2000, every: 100}``): Zhu & Gupta (2017), the sparsity
rises from 0 to ``amount`` along s_t = s_f (1 - (1 - t/n)^3) while the model is distilled from the model
before the step (``teacher: before``; ``teacher`` the run's teacher; ``none`` trains on labels as Zhu &
Gupta did), the masks recomputed every ``every`` steps by magnitude. A later ``distill`` step keeps
the zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.masks import apply_masks, cubic_sparsity, magnitude_scores, masks_for, prunable_weights
from distill.compress.recover import (
    recovery_objective,
    recovery_task,
    recovery_teacher,
    steps_per_epoch,
    train_recovery,
    training_batches,
)
from distill.compress.share import is_shared
from distill.compress.structured import (
    ffn_magnitude,
    grouped_first_order,
    head_magnitude,
    heads_to_keep,
    layer_parts,
    prune_ffn,
    prune_heads,
)
from distill.train.settings import StrictModel


class PruneSchedule(StrictModel):
    kind: Literal["one_shot", "cubic"] = "one_shot"
    steps: int = Field(1000, ge=1)  # cubic: optimizer steps from 0 to the final sparsity
    every: int = Field(100, ge=1)  # cubic: masks recomputed every this many steps (Zhu & Gupta's Δt)
    lr: float | None = Field(None, gt=0)  # cubic: the distillation's lr (default: the student's)
    epochs: int | None = Field(None, ge=1)  # cubic: training length (default: until the final sparsity)
    # cubic: trained as a student of the model before the step, of the run's teacher, or on labels alone
    teacher: Literal["before", "teacher", "none"] = "before"


def first_order_scores(weights: dict[str, Tensor], losses: Iterable[Tensor]) -> dict[str, Tensor]:
    """Σ_batches |w · ∂L_b/∂w| for each weight (Molchanov et al. 2019's first-order Taylor importance);
    ``losses`` yields one scalar loss per batch, each backpropagated in turn."""
    scores = {name: torch.zeros_like(weight) for name, weight in weights.items()}
    for loss in losses:
        grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
        for (name, weight), grad in zip(weights.items(), grads, strict=True):
            if grad is not None:
                scores[name] += (weight.detach() * grad).abs()
    return scores


def distillation_losses(state: CompressState, batches: int) -> Iterator[Tensor]:
    """The distillation loss from the run's teacher on each of the first ``batches`` training batches (the
    model in train mode meanwhile): what first-order importance differentiates."""
    task = recovery_task(state)
    teacher = state.teacher if state.teacher is not None else state.before
    objective = recovery_objective(state, teacher, task)
    model = objective.trainable
    model.train()
    try:
        for batch in training_batches(state, state.context.recipe.student.train.batch_size, batches):
            yield objective.losses(model, batch)["total"]
    finally:
        model.eval()


@register_step("prune")
class Prune(CompressStep):
    kind: Literal["prune"] = "prune"
    method: Literal["magnitude", "taylor"] = "magnitude"
    # ffn neurons, attention heads (transformers), channels (CNNs and MLPs): the model really shrinks
    structure: Literal["unstructured", "ffn", "heads", "channels"] = "unstructured"
    amount: float = Field(0.5, gt=0, lt=1)  # the fraction of prunable weights set to zero
    scope: Literal["global", "layer"] = "global"
    schedule: PruneSchedule = PruneSchedule()
    skip: list[str] = Field(default_factory=list)  # module names left dense (with all below them): [classifier]
    batches: int = Field(8, ge=1)  # taylor: training batches the gradient is summed over
    recalibrate: int = Field(16, ge=0)  # channels: training batches BatchNorm statistics are re-estimated on

    def label(self) -> str:
        how = "gradual" if self.schedule.kind == "cubic" else self.method
        if self.structure == "ffn":
            return f"prune {100 * self.amount:g}% of FFN neurons ({how})"
        if self.structure == "heads":
            return f"prune {100 * self.amount:g}% of heads, {self.scope} ({how})"
        if self.structure == "channels":
            return f"prune {100 * self.amount:g}% of channels, {self.scope} ({how})"
        return f"prune {100 * self.amount:g}% {self.scope} ({how})"

    def check(self, recipe: Any) -> None:
        if self.schedule.kind == "cubic" and self.method != "magnitude":
            raise ValueError("compress prune: the cubic schedule prunes by magnitude; use method: magnitude")
        if self.schedule.kind == "cubic" and self.structure != "unstructured":
            raise ValueError(
                f"compress prune: structure {self.structure!r} removes units at once; the cubic schedule is for "
                "unstructured pruning (follow with a distill step to recover)"
            )

    def apply(self, state: CompressState, index: int) -> None:
        model = state.require_torch(self.kind)
        if self.structure != "unstructured":
            self._structured(state, model)
            return
        if state.clusters:
            raise ValueError("compress prune: after weight clustering pruning would break the clusters; prune first")
        weights = prunable_weights(model, self.skip)
        if not weights:
            raise ValueError(f"compress prune: the model has no Linear or Conv weights outside skip {self.skip}")
        state.keep_before()
        if self.schedule.kind == "one_shot":
            if self.method == "magnitude":
                scores = magnitude_scores(weights)
            else:
                scores = first_order_scores(weights, distillation_losses(state, self.batches))
            state.masks.update(masks_for(scores, self.amount, self.scope))
            apply_masks(model, state.masks)
            return
        self._gradual(state, index, weights)

    def _gradual(self, state: CompressState, index: int, weights: dict[str, Tensor]) -> None:
        schedule, earlier = self.schedule, dict(state.masks)  # masks of an earlier prune stay
        per_epoch = steps_per_epoch(recovery_task(state), state.context.recipe.student.train.batch_size)
        epochs = max(math.ceil(schedule.steps / per_epoch), schedule.epochs or 0)  # fine-tuned at s_f after

        def masks_at(step: int) -> dict[str, Tensor] | None:
            if step % schedule.every and step != schedule.steps:
                return None  # between pruning steps the masks stay as they are
            sparsity = cubic_sparsity(step, self.amount, schedule.steps)
            new = masks_for(magnitude_scores(weights), sparsity, self.scope)
            kept = {name: mask * earlier[name] if name in earlier else mask for name, mask in new.items()}
            return {**earlier, **kept}

        folder = state.step_folder(index, self.kind)
        names = sorted(set(weights) | set(earlier))
        teacher = recovery_teacher(state, schedule.teacher) if schedule.teacher != "none" else None
        label = f"prune s{state.seed}"
        train_recovery(state, teacher, folder, label, epochs, schedule.lr, masks_at, names)

    def _structured(self, state: CompressState, model: nn.Module) -> None:
        state.require_unshared(f"prune (structure {self.structure})")
        if is_shared(model):
            raise ValueError(
                f"compress prune: structure {self.structure!r} after share_layers would cut the shared layer once "
                "per position; prune before share_layers"
            )
        if self.structure == "channels":
            from distill.compress.channels import prune_channels, recalibrate_batchnorm

            state.keep_before()
            losses = distillation_losses(state, self.batches) if self.method == "taylor" else ()
            prune_channels(model, state.task.sample_inputs(), self.amount, self.scope, self.method, losses)
            if self.recalibrate:
                batch_size = state.context.recipe.student.train.batch_size
                recalibrate_batchnorm(model, training_batches(state, batch_size, self.recalibrate, task=state.task))
            state.custom_layers = True  # the model's spec no longer describes its widths
            return
        try:
            parts = layer_parts(model)
        except ValueError as error:
            what = f"compress prune: structure {self.structure!r} needs a transformer student"
            raise ValueError(f"{what}: {error}") from None
        state.keep_before()
        if self.method == "taylor":
            scores = grouped_first_order(parts, self.structure, distillation_losses(state, self.batches))
        else:
            scores = [ffn_magnitude(p) if self.structure == "ffn" else head_magnitude(p) for p in parts]
        if self.structure == "ffn":
            width = parts[0].ffn_in.out_features
            prune_ffn(model, parts, scores, max(1, width - round(self.amount * width)))
        else:
            prune_heads(parts, heads_to_keep(scores, self.amount, self.scope))
