"""Teacher-assistant chains (Mirzadeh et al. 2020, "Improved Knowledge Distillation via Teacher Assistant").

A large gap between teacher and student hurts distillation; distilling through intermediate
"assistants" (e.g. 6 -> 4 -> 3 layers) closes it step by step. A chain is generic: it only needs
a way to build the next, smaller model from the current one and a way to distil one step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Model = TypeVar("Model")


@dataclass
class ChainStep:
    """One link of a chain: its position, the size it was built with, the model and what training returned."""

    index: int
    size: Any
    model: Any
    result: Any


def run_chain(
    teacher: Model,
    sizes: Sequence[Any],
    build: Callable[[Model, Any], Model],
    distil: Callable[[Model, Model, int], Any],
) -> list[ChainStep]:
    """Distil ``teacher`` down a chain of ``sizes``; each step's student is the next step's teacher.

    ``build(previous, size)`` makes the step's fresh student (e.g. a shallower copy of ``previous``);
    ``distil(previous, student, index)`` trains it in place and returns anything (metrics). The last
    element of the returned list holds the final student.
    """
    if not sizes:
        raise ValueError("a teacher-assistant chain needs at least one student size")
    steps: list[ChainStep] = []
    current = teacher
    for index, size in enumerate(sizes):
        student = build(current, size)
        result = distil(current, student, index)
        steps.append(ChainStep(index, size, student, result))
        current = student
    return steps
