"""Schedules: a number that changes over optimizer steps (temperature, loss weights).

A recipe may write ``temperature: 4.0`` (constant) or
``temperature: {kind: linear, start: 8, end: 2}`` (annealed over the whole run). Every consumer
calls ``schedule(step, total_steps)`` and never cares which kind it got.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from distill.sections import SECTION_CONFIG, RecipeSection


class Schedule(RecipeSection):
    """A value as a function of the optimizer step.

    * ``constant``: ``start`` throughout.
    * ``linear``: from ``start`` to ``end`` over ``steps`` steps, then held at ``end``.
    * ``cosine``: half-cosine from ``start`` to ``end`` over ``steps`` steps, then held at ``end``.
    * ``step``: ``start`` before ``milestones[0]``, ``values[i]`` from step ``milestones[i]`` on.

    ``steps=None`` means the whole run: the ``total_steps`` passed when the schedule is evaluated.
    """

    model_config = ConfigDict(**SECTION_CONFIG, frozen=True)

    kind: Literal["constant", "linear", "cosine", "step"] = "constant"
    start: float
    end: float | None = None
    steps: int | None = Field(None, ge=1)
    milestones: list[int] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Schedule:
        if self.kind in ("linear", "cosine"):
            if self.end is None:
                raise ValueError(f"a {self.kind} schedule needs 'end' (the value reached after 'steps' steps)")
            if self.milestones or self.values:
                raise ValueError(f"'milestones' and 'values' apply to kind 'step', not {self.kind!r}")
            return self
        # For constant and step, end/steps would be silently ignored; a missing 'kind' (which defaults
        # to constant) is the usual cause, so say so instead of training with a constant by surprise.
        if self.end is not None or self.steps is not None:
            raise ValueError(f"'end' and 'steps' apply to kinds 'linear' and 'cosine', not {self.kind!r}")
        if self.kind == "constant":
            if self.milestones or self.values:
                raise ValueError("'milestones' and 'values' apply to kind 'step', not 'constant'")
            return self
        if len(self.values) != len(self.milestones):
            raise ValueError(
                f"a step schedule needs one value per milestone, got {len(self.milestones)} milestones "
                f"and {len(self.values)} values"
            )
        if any(m < 0 for m in self.milestones):
            raise ValueError(f"milestones must be non-negative steps, got {self.milestones}")
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            raise ValueError(f"milestones must be strictly increasing, got {self.milestones}")
        return self

    def values_taken(self) -> list[float]:
        """Every value the schedule passes through (its extremes among them), for range checks."""
        return [self.start, *([] if self.end is None else [self.end]), *self.values]

    def __call__(self, step: int, total_steps: int | None = None) -> float:
        """The value at optimizer step ``step`` (0-based) of a run of ``total_steps`` steps."""
        if self.kind == "constant":
            return self.start
        if self.kind == "step":
            value = self.start
            for milestone, milestone_value in zip(self.milestones, self.values, strict=True):
                if step >= milestone:
                    value = milestone_value
            return value
        span = self.steps if self.steps is not None else total_steps
        if span is None:
            raise ValueError(
                f"a {self.kind} schedule without 'steps' spans the whole run, so it needs total_steps; "
                "pass total_steps or give the schedule 'steps'"
            )
        end = self.end
        assert end is not None  # guaranteed by the validator; narrows the type
        # A zero-length span (an empty run) has nothing to anneal over: it is already at the end.
        progress = 1.0 if span <= 0 else min(max(step / span, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (end - self.start) * progress
        return end + (self.start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


# For fields of other pydantic models and dataclasses: a plain number or a schedule.
ScheduleLike = float | Schedule


def as_schedule(value: float | dict[str, Any] | Schedule) -> Schedule:
    """Normalise a number (constant), a dict of Schedule fields, or a Schedule into a Schedule."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool):  # bool is an int; True as a temperature is surely a mistake
        raise TypeError(f"expected a number, a dict or a Schedule, got {value!r}")
    if isinstance(value, int | float):
        return Schedule(kind="constant", start=float(value))
    if isinstance(value, dict):
        return Schedule.model_validate(value)
    raise TypeError(f"expected a number, a dict or a Schedule, got {type(value).__name__}")
