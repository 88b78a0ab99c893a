"""Offline distillation: a trained, frozen teacher (one model or an ensemble) -> a student, per seed.

Per seed the student is built once and trained from those same weights on labels alone (``baseline``)
and distilled (``distilled``); with ``student.chain`` the assistants are distilled first, largest first,
each from the one before (Mirzadeh et al. 2020), and the last one teaches the student; with an ensemble
teacher the student is also distilled from member 0 alone (``distilled_single``). ``transfer:`` chooses
the data (see :mod:`distill.strategies.transfer`).

Run folder: ``<out>/teacher/`` (``member-<n>/`` for ensembles), ``<out>/seed-<s>/{baseline, assistant-<i>,
distilled, distilled-single}/``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from torch import nn

from distill.strategies.chain import run_chain
from distill.strategies.context import RunContext
from distill.strategies.ensemble import EnsembleTeacher
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.transfer import transfer_tasks


@register_strategy("offline")
class Offline(StrategySpec):
    kind: Literal["offline"] = "offline"

    def check(self, recipe: Any) -> None:
        if not recipe.transfer.labels and recipe.distill.hard_weight != 0:
            raise ValueError("transfer.labels is false: distill.hard_weight must be 0 (the student has no labels)")

    def run(self, context: RunContext) -> list[Row]:
        recipe = context.recipe
        tasks = transfer_tasks(context.task, recipe.transfer, recipe.data.split_seed)
        context.task, context.teacher_task = tasks.student, tasks.teacher
        teacher = context.teacher()
        rows = list(teacher.members)
        for seed in recipe.seeds:
            rows += self._seed(context, teacher.model, tasks.distil, seed)
        return rows

    def _through_chain(
        self, context: RunContext, teacher: nn.Module, task: Any, seed: int, rows: list[Row]
    ) -> nn.Module:
        """Distil the assistants of ``student.chain`` in turn (each from the one before); append their rows and
        return the last one, the student's teacher."""
        specs = context.chain_specs()

        def build(previous: nn.Module, spec: Any) -> nn.Module:
            return context.build(spec, seed, source=previous)

        def distil(previous: nn.Module, assistant: nn.Module, index: int) -> None:
            run_dir = context.seed_dir(seed) / f"assistant-{index}"
            objective = context.objective(previous, assistant, specs[index], task)
            context.train(objective, run_dir, seed, f"assistant {index} s{seed}", task=task)
            rows.append(context.row("assistant", seed, assistant, run_dir, index))

        return run_chain(teacher, specs, build, distil)[-1].model

    def _seed(self, context: RunContext, teacher: nn.Module, distil_task: Any, seed: int) -> list[Row]:
        recipe, seed_dir = context.recipe, context.seed_dir(seed)
        # A student derived from its teacher (a shrunk transformer) derives from an ensemble's first member.
        source = teacher.members[0] if isinstance(teacher, EnsembleTeacher) else teacher
        initial = context.build_student(seed, source=source)
        rows: list[Row] = []
        previous = self._through_chain(context, teacher, distil_task, seed, rows) if recipe.student.chain else teacher
        # A student derived from its teacher (a shrunk transformer) starts from the last assistant's layers.
        start = initial if previous is teacher else context.build_student(seed, source=previous)
        runs: list[tuple[str, nn.Module | None, nn.Module]] = []
        if recipe.student.baseline:
            runs.append(("baseline", None, initial))
        runs.append(("distilled", previous, start))
        if isinstance(teacher, EnsembleTeacher) and len(teacher.members) > 1:
            runs.append(("distilled_single", teacher.members[0], initial))
        for role, role_teacher, weights in runs:
            student = copy.deepcopy(weights)  # every role starts from the same weights
            task = context.task if role_teacher is None else distil_task
            run_dir = seed_dir / role.replace("_", "-")
            objective = context.objective(role_teacher, student, task=task)
            context.train(objective, run_dir, seed, f"{role} s{seed}", task=task)
            rows.append(context.row(role, seed, student, run_dir))
            if role == "distilled" and (inputs := context.task.artefact_inputs()) is not None:
                recipe.student.model.write_artefacts(student, inputs, run_dir)
        return rows
