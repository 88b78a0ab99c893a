"""Schedules: values at chosen steps against hand computation, and validation errors."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from distill.core.schedules import Schedule, as_schedule


def test_constant() -> None:
    schedule = Schedule(start=4.0)
    assert schedule.kind == "constant"
    assert schedule(0) == schedule(10_000, 5) == 4.0


def test_linear_with_steps_reaches_end_and_holds() -> None:
    schedule = Schedule(kind="linear", start=8.0, end=2.0, steps=10)
    assert schedule(0) == 8.0
    assert schedule(5) == pytest.approx(5.0)
    assert schedule(3) == pytest.approx(8.0 - 6.0 * 0.3)
    assert schedule(10) == pytest.approx(2.0)
    assert schedule(25) == pytest.approx(2.0)


def test_linear_over_the_whole_run() -> None:
    schedule = Schedule(kind="linear", start=0.0, end=1.0)
    assert schedule(25, total_steps=100) == pytest.approx(0.25)
    assert schedule(100, total_steps=100) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="total_steps"):
        schedule(5)


def test_cosine() -> None:
    schedule = Schedule(kind="cosine", start=1.0, end=0.0, steps=100)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(50) == pytest.approx(0.5)
    assert schedule(25) == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert schedule(100) == pytest.approx(0.0)
    assert schedule(150) == pytest.approx(0.0)
    rising = Schedule(kind="cosine", start=2.0, end=6.0)
    assert rising(10, total_steps=40) == pytest.approx(6.0 + (2.0 - 6.0) * (1 + math.cos(math.pi / 4)) / 2)


def test_step_milestones() -> None:
    schedule = Schedule(kind="step", start=1.0, milestones=[10, 20], values=[0.5, 0.1])
    assert [schedule(s) for s in (0, 9, 10, 19, 20, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.1, 0.1]


def test_linear_without_end_rejected() -> None:
    with pytest.raises(ValidationError, match="needs 'end'"):
        Schedule(kind="linear", start=1.0)


def test_end_without_kind_rejected() -> None:
    # {start: 8, end: 2} with the kind forgotten must not silently become a constant 8.
    with pytest.raises(ValidationError, match="'end' and 'steps' apply"):
        Schedule(start=8.0, end=2.0)


def test_values_milestones_length_mismatch_rejected() -> None:
    with pytest.raises(ValidationError, match="one value per milestone"):
        Schedule(kind="step", start=1.0, milestones=[10, 20], values=[0.5])


def test_milestones_must_increase() -> None:
    with pytest.raises(ValidationError, match="strictly increasing"):
        Schedule(kind="step", start=1.0, milestones=[20, 10], values=[0.5, 0.1])


def test_extra_key_and_unknown_kind_rejected() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Schedule(start=1.0, stop=2.0)
    with pytest.raises(ValidationError):
        Schedule(kind="exponential", start=1.0)
    with pytest.raises(ValidationError):
        Schedule(kind="linear", start=1.0, end=0.0, steps=0)


def test_frozen() -> None:
    with pytest.raises(ValidationError):
        Schedule(start=1.0).start = 2.0


def test_as_schedule() -> None:
    assert as_schedule(4.0) == Schedule(start=4.0)
    assert as_schedule(2)(0) == 2.0
    schedule = as_schedule({"kind": "linear", "start": 8, "end": 2, "steps": 4})
    assert schedule.kind == "linear" and schedule(2) == pytest.approx(5.0)
    assert as_schedule(schedule) is schedule
    with pytest.raises(ValidationError):
        as_schedule({"kind": "linear", "start": 8})
    with pytest.raises(TypeError):
        as_schedule(True)
    with pytest.raises(TypeError):
        as_schedule("4.0")
