"""Lottery tickets (``- {lottery: {rounds: 5, rate: 0.5}}``): iterative magnitude pruning with resetting
(Frankle & Carbin 2019), late resetting to step k (Frankle et al. 2020), and the random
re-initialisation control.

Round 0 trains the student's architecture densely from its initialisation (the same seed as the run's
student), keeping the weights at step ``rewind`` (0: the initialisation). Each later round prunes the
``rate`` fraction of the surviving prunable weights with the smallest trained magnitude (masks
cumulative; per layer, or over all layers with ``scope: global``), resets the survivors to the kept
weights (``reinit: true``: to a fresh random initialisation of the same architecture, the control that
should do worse) and trains again with the mask applied. ``teacher: none`` trains on labels as the
paper does; ``teacher: teacher`` distils from the run's teacher. The table's row is the last round's
network; :func:`lottery_rounds` yields every round for a benchmark.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from distill.compress.base import CompressState, register_step
from distill.compress.masks import apply_masks, magnitude_scores, masks_for, prunable_weights
from distill.compress.scratch import FromScratch


class _Keep:
    """An after-step hook (of :class:`MaskedObjective`) that copies the model's weights at step ``step``."""

    def __init__(self, model: nn.Module, step: int) -> None:
        self.model, self.step, self.weights = model, step, None

    def __call__(self, step: int, total_steps: int | None) -> None:
        if step == self.step and self.weights is None:
            self.weights = copy.deepcopy(self.model.state_dict())


def lottery_rounds(state: CompressState, spec: Lottery, index: int) -> Iterator[tuple[int, float, nn.Module]]:
    """(round, fraction of prunable weights remaining, trained network) for round 0 (dense) and each
    pruning round."""
    folder = state.step_folder(index, spec.kind)
    model = spec.fresh_student(state)
    initial = copy.deepcopy(model.state_dict())
    keep = _Keep(model, spec.rewind)
    spec.train_masked(state, spec.masked(state, model, {}, hooks=[keep]), folder / "round-0", "ticket r0", index)
    rewind = initial if spec.rewind == 0 or keep.weights is None else keep.weights
    masks: dict[str, Tensor] = {}
    remaining = 1.0
    yield 0, remaining, model
    for round_number in range(1, spec.rounds + 1):
        remaining *= 1 - spec.rate
        weights = prunable_weights(model, spec.skip)
        scores = {
            name: score * masks[name] if name in masks else score for name, score in magnitude_scores(weights).items()
        }
        masks = masks_for(scores, 1 - remaining, spec.scope)
        if spec.reinit:
            model.load_state_dict(spec.fresh_student(state, state.seed + 7_919 * round_number).state_dict())
        else:
            model.load_state_dict(rewind)
        apply_masks(model, masks)
        objective = spec.masked(state, model, masks)
        spec.train_masked(state, objective, folder / f"round-{round_number}", f"ticket r{round_number}", index)
        masks = objective.masks()
        yield round_number, remaining, model


@register_step("lottery")
class Lottery(FromScratch):
    kind: Literal["lottery"] = "lottery"
    rounds: int = Field(3, ge=1)
    rate: float = Field(0.2, gt=0, lt=1)  # of the surviving prunable weights, pruned each round
    rewind: int = Field(0, ge=0)  # reset survivors to their values at this optimizer step (0: initialisation)
    reinit: bool = False  # the control: survivors re-initialised at random instead
    scope: Literal["layer", "global"] = "layer"  # per layer as the paper (it prunes the output layer at half rate)

    def label(self) -> str:
        left = 100 * (1 - self.rate) ** self.rounds
        how = "random re-init" if self.reinit else f"reset to step {self.rewind}"
        return f"lottery ticket, {left:.1f}% of weights ({how})"

    def apply(self, state: CompressState, index: int) -> None:
        state.require_torch(self.kind)
        state.require_unshared(self.kind)
        state.keep_before()
        for _, _, model in lottery_rounds(state, self, index):
            trained = model
        state.model = trained
        state.masks.update({n: (w != 0).float() for n, w in prunable_weights(trained, self.skip).items()})
