"""RigL (``- {rigl: {sparsity: 0.9, epochs: 10}}``): dynamic sparse training from scratch, "Rigging the
Lottery" (Evci, Gale, Menick, Castro & Elsen 2020).

The student starts from a fresh initialisation with a random mask at ``sparsity``: the same in every
layer (``distribution: uniform``) or Erdős–Rényi-Kernel (``erk``, the paper's default: layer l keeps a
density ∝ Σ dims / Π dims of its weight, with ε chosen so the whole network has the target density and
layers that would exceed 1 kept dense). Every ``every`` optimizer steps (ΔT) until ``end`` × the
training steps (T_end), in each layer with n active weights it drops the k = ⌊f(t)·n⌋ active weights of
smallest |w| and grows the k inactive ones (just-dropped ones included) of largest |∂L/∂w|, the dense
gradient of this step's batch, with the cosine drop fraction f(t) = α/2 · (1 + cos(π t / T_end)),
α = ``drop_fraction``. Grown weights start at zero, their optimizer state (Adam's moments, momentum) is
reset, and, as the reference implementation does, the gradient step is not applied at a mask-update
step. Each layer's count of active weights, so the sparsity, never changes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.compress.base import CompressState, register_step
from distill.compress.masks import MaskedObjective, apply_masks, kept_count, prunable_weights
from distill.compress.scratch import FromScratch


def erk_densities(shapes: dict[str, torch.Size], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities: layer l at ε·Σ dims_l / Π dims_l, ε solved so that the total kept is
    ``density`` × all weights, layers that would go over 1 set dense and ε solved again for the rest."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        budget = density * sum(sizes.values()) - sum(sizes[name] for name in dense)
        epsilon = budget / sum(raw[name] * sizes[name] for name in shapes if name not in dense)
        over = {name for name in shapes if name not in dense and epsilon * raw[name] > 1}
        if not over:
            return {name: 1.0 if name in dense else epsilon * raw[name] for name in shapes}
        dense |= over


def random_masks(
    shapes: dict[str, torch.Size], densities: dict[str, float], generator: torch.Generator
) -> dict[str, Tensor]:
    """A keep-mask per layer with exactly round(density × size) ones at random positions."""
    masks = {}
    for name, shape in shapes.items():
        size = math.prod(shape)
        keep = kept_count(size, 1 - densities[name]) if densities[name] < 1 else size
        mask = torch.zeros(size)
        mask[torch.randperm(size, generator=generator)[:keep]] = 1.0
        masks[name] = mask.view(shape)
    return masks


def drop_fraction(step: int, alpha: float, end: float) -> float:
    """The cosine schedule f(t) = α/2 · (1 + cos(π t / T_end))."""
    return alpha / 2 * (1 + math.cos(math.pi * step / end))


def drop_and_grow(weight: Tensor, grad: Tensor, active: Tensor, fraction: float) -> Tensor:
    """The new boolean mask of one layer: the ⌊fraction · n⌋ active weights of smallest |w| dropped and as
    many inactive ones of largest |grad| grown (among all not kept, just-dropped ones included)."""
    ones = int(active.sum())
    drop = int(fraction * ones)
    if drop == 0 or ones == active.numel():
        return active
    flat_active = active.flatten()
    keep_scores = torch.where(flat_active, weight.abs().flatten(), -math.inf)
    kept = torch.zeros_like(flat_active)
    kept[torch.topk(keep_scores, ones - drop, sorted=False).indices] = True
    grow_scores = torch.where(kept, -math.inf, grad.abs().flatten())
    new = kept.clone()
    new[torch.topk(grow_scores, drop, sorted=False).indices] = True
    return new.view_as(active)


def reset_optimizer_state(optimizer: Any, parameter: nn.Parameter, where: Tensor) -> None:
    """Zero the per-weight optimizer state (Adam's moments, SGD's momentum) of ``parameter`` at ``where``."""
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate wraps the torch optimizer
    for value in inner.state.get(parameter, {}).values():
        if isinstance(value, Tensor) and value.shape == parameter.shape:
            value.masked_fill_(where.to(value.device), 0)


class RigLUpdates:
    """The before-step hook of a :class:`MaskedObjective` that drops and regrows its masks."""

    def __init__(self, model: nn.Module, objective: MaskedObjective, every: int, alpha: float, end: float) -> None:
        self.parameters = dict(model.named_parameters())
        self.objective, self.every, self.alpha, self.end = objective, every, alpha, end
        self.updates = 0

    @torch.no_grad()
    def __call__(self, step: int, total_steps: int | None, optimizer: Any) -> bool:
        end = self.end * (total_steps or 0)
        if step % self.every or step >= end:
            return False
        fraction = drop_fraction(step, self.alpha, end)
        new = {}
        for name, mask in self.objective.masks().items():
            parameter, active = self.parameters[name], mask.bool()
            if parameter.grad is None:
                continue
            new[name] = drop_and_grow(parameter.detach(), parameter.grad, active.to(parameter.device), fraction)
            grown = new[name] & ~active.to(parameter.device)
            parameter.masked_fill_(grown, 0)  # grown weights start at zero
            reset_optimizer_state(optimizer, parameter, ~active)
        self.objective.buffers.update(new)
        self.updates += 1
        return True  # no gradient step at a mask update, as in the reference implementation


@register_step("rigl")
class RigL(FromScratch):
    kind: Literal["rigl"] = "rigl"
    sparsity: float = Field(0.9, gt=0, lt=1)  # of all prunable weights, fixed throughout
    distribution: Literal["uniform", "erk"] = "erk"
    every: int = Field(100, ge=1)  # ΔT: optimizer steps between mask updates
    drop_fraction: float = Field(0.3, gt=0, le=1)  # α: the fraction of active weights updated at the start
    end: float = Field(0.75, gt=0, le=1)  # T_end as a fraction of the training steps: no updates after it

    def label(self) -> str:
        how = "distilled" if self.teacher == "teacher" else "labels"
        return f"RigL {100 * self.sparsity:g}% sparse from scratch ({self.distribution}, {how})"

    def initial_masks(self, model: nn.Module, seed: int) -> dict[str, Tensor]:
        shapes = {name: weight.shape for name, weight in prunable_weights(model, self.skip).items()}
        if not shapes:
            raise ValueError(f"compress rigl: the model has no Linear or Conv weights outside skip {self.skip}")
        if self.distribution == "erk":
            densities = erk_densities(shapes, 1 - self.sparsity)
        else:
            densities = dict.fromkeys(shapes, 1 - self.sparsity)
        return random_masks(shapes, densities, torch.Generator().manual_seed(seed))

    def apply(self, state: CompressState, index: int) -> None:
        state.require_torch(self.kind)
        state.require_unshared(self.kind)
        state.keep_before()
        model = self.fresh_student(state)
        masks = self.initial_masks(model, state.seed * 1_000 + index)
        apply_masks(model, masks)
        objective = self.masked(state, model, masks)
        updates = RigLUpdates(model, objective, self.every, self.drop_fraction, self.end)
        objective.before_step = updates
        self.train_masked(state, objective, state.step_folder(index, self.kind), f"rigl s{state.seed}", index)
        state.model = model
        state.masks.update(objective.masks())
        state.details["rigl_mask_updates"] = updates.updates
