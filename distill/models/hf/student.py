"""Shrink a transformer: choose which teacher layers a shallower student stands for, and copy them.

Layer-mapping strategies (student layer ``i`` of ``S`` <- teacher layer ``m(i)`` of ``T``, 0-based):

* ``skip`` — ``m(i) = floor((i + 1) · T / S) − 1``: every k-th layer ending at the top, k = T / S
  (PKD-skip, TinyBERT; 6 of 12 -> 1, 3, 5, 7, 9, 11).
* ``uniform`` — ``m(i) = round(i · (T − 1) / (S − 1))``: evenly spread, first and last kept
  (DistilBERT's initialisation, 6 of 12 -> 0, 2, 4, 7, 9, 11).
* ``last`` — ``m(i) = T − S + i``: the top S layers (PKD-last).
* an explicit list of teacher layer indices.

:func:`student_from_teacher` builds a student of the teacher's class and config with fewer layers,
either copying embeddings, the mapped layers, pooler and head from the teacher (DistilBERT-style
initialisation) or randomly initialised with the same shapes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from distill.capture.hf_structure import layout_of

STRATEGIES = ("skip", "uniform", "last")
Strategy = Literal["skip", "uniform", "last"] | Sequence[int]


def map_layers(student_layers: int, teacher_layers: int, strategy: Strategy = "skip") -> list[int]:
    """The 0-based teacher layer that each of the ``student_layers`` student layers stands for."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"a student of {student_layers} layers cannot map onto a teacher of {teacher_layers}; "
            f"use 1..{teacher_layers} student layers"
        )
    if not isinstance(strategy, str):
        chosen = [int(i) for i in strategy]
        if len(chosen) != student_layers or len(set(chosen)) != len(chosen):
            raise ValueError(f"an explicit layer map needs {student_layers} distinct teacher layers, got {chosen}")
        if any(not 0 <= i < teacher_layers for i in chosen):
            raise ValueError(f"layer map {chosen} has indices outside the teacher's 0..{teacher_layers - 1}")
        return chosen
    if strategy == "skip":
        return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]
    if strategy == "uniform":
        if student_layers == 1:
            return [teacher_layers - 1]
        return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]
    if strategy == "last":
        return list(range(teacher_layers - student_layers, teacher_layers))
    raise ValueError(f"unknown layer-mapping strategy {strategy!r}; use one of {STRATEGIES} or a list of indices")


def layer_pairs(
    kind: Literal["hidden", "attention", "scores", "values"],
    student_layers: int,
    teacher_layers: int,
    strategy: Strategy = "skip",
    include_embeddings: bool = False,
) -> tuple[list[str], list[str]]:
    """Student and teacher layer names paired by a mapping strategy, for a FeatureMatch.

    ``hidden`` names are offset by one (``hidden:0`` is the embedding output); ``include_embeddings``
    adds the ``hidden:0 <- hidden:0`` pair (TinyBERT's embedding loss).
    """
    mapping = map_layers(student_layers, teacher_layers, strategy)
    offset = 1 if kind == "hidden" else 0
    student = [f"{kind}:{i + offset}" for i in range(student_layers)]
    teacher = [f"{kind}:{m + offset}" for m in mapping]
    if include_embeddings:
        if kind != "hidden":
            raise ValueError("include_embeddings applies to hidden-state pairs only")
        student, teacher = ["hidden:0", *student], ["hidden:0", *teacher]
    return student, teacher


def _set_layer_count(config: object, count: int) -> None:
    for name in ("num_hidden_layers", "n_layers"):
        if hasattr(config, name):
            setattr(config, name, count)
            return
    raise ValueError(f"{type(config).__name__} has no num_hidden_layers / n_layers")


def student_from_teacher(
    teacher: nn.Module,
    num_layers: int | None = None,
    strategy: Strategy = "uniform",
    init: Literal["teacher", "random"] = "teacher",
    seed: int = 0,
) -> nn.Module:
    """A copy of ``teacher``'s architecture with fewer layers.

    ``init="teacher"`` copies every weight: the embeddings, pooler and head as they are, and student
    layer ``i`` from teacher layer ``map_layers(...)[i]``. ``init="random"`` keeps the shapes only
    (initialised from ``seed``). ``num_layers`` may be omitted when ``strategy`` is an explicit list.
    """
    layout = layout_of(teacher)
    if num_layers is None:
        if isinstance(strategy, str):
            raise ValueError("give num_layers, or an explicit list of teacher layers as the strategy")
        num_layers = len(strategy)
    mapping = map_layers(num_layers, layout.num_layers, strategy)
    config = copy.deepcopy(teacher.config)
    _set_layer_count(config, num_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = type(teacher)(config)
    if init == "random":
        return student
    if init != "teacher":
        raise ValueError(f"init must be 'teacher' or 'random', got {init!r}")
    student.load_state_dict(_mapped_state(teacher.state_dict(), layout.layers, mapping), strict=True)
    return student


def _mapped_state(teacher_state: dict, layers: str, mapping: Sequence[int]) -> dict:
    """Teacher weights renamed to the student's keys: layer ``m(i)``'s entries become layer ``i``'s."""
    prefix = f"{layers}."
    state = {}
    for key, value in teacher_state.items():
        if not key.startswith(prefix):
            state[key] = value
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        for student_index, teacher_index in enumerate(mapping):
            if int(index) == teacher_index:
                state[f"{prefix}{student_index}.{rest}"] = value
    return state
