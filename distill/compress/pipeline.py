"""The ``compress:`` list run on each seed's distilled student: one deployment-table row per step."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from distill.compress.base import CompressState, CompressStep
from distill.compress.sparse_io import save_compressed
from distill.strategies.rows import Row


def run_compress(context: Any, rows: Sequence[Row], steps: Sequence[CompressStep]) -> list[Row]:
    """Run ``steps`` in order on a copy of every ``distilled`` row's model; the new rows, role
    ``compressed`` with the step's position as index (the distilled rows are left as they were)."""
    if not steps:
        return []
    students = [row for row in rows if row.role == "distilled"]
    if not students:
        raise ValueError("compress: needs a distilled student (the offline strategy); this run has none")
    teacher = context.trained_teacher.model if context.trained_teacher is not None else None
    produced: list[Row] = []
    for student in students:
        folder = context.seed_dir(student.seed) / "compress"
        state = CompressState(context, student.seed, copy.deepcopy(student.model), folder, context.task, teacher)
        for index, step in enumerate(steps, start=1):
            produced.append(_run_step(state, step, index))
    return produced


def _run_step(state: CompressState, step: CompressStep, index: int) -> Row:
    state.weights, state.details = None, {}
    step.apply(state, index)
    if state.artefact is None:  # a PyTorch model: its weights, pruned tensors compressed, are the size on disk
        state.weights = state.step_folder(index, step.kind) / "model.safetensors"
        save_compressed(state.model.state_dict(), state.weights)
        served = copy.deepcopy(state.model)  # later steps change state.model in place
    else:
        served = state.artefact
    score = state.task.score(served)
    smallest = getattr(state.task, "vocab_size", None)
    if smallest is not None and smallest < state.context.task.vocab_size:
        # one latency probe of random ids times every model of the run: valid for the trimmed vocabulary too
        state.context.task.vocab_size = smallest
    return Row("compressed", state.seed, score, served, index, state.weights, label=step.label(), details=state.details)
