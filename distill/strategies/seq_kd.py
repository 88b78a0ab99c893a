"""Sequence-level KD for causal LMs (Kim & Rush 2016; :mod:`distill.lm.seq_kd`): the teacher completes every
training prompt once, and the student trains on the teacher's sequences.

Per seed, from the same initial student: ``baseline`` (next-token CE on the data) and ``distilled`` (CE on the
teacher's sequences, plus ``distill.response_loss`` against the teacher on them when it is set, weighted by
``distill.kd_weight``, the CE then by ``distill.hard_weight``). Evaluation and scores are on the real data.

Run folder: ``<out>/teacher-sequences/``, ``<out>/seed-<s>/{baseline, distilled}/``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

from distill.strategies.context import RunContext
from distill.strategies.registry import Row, StrategySpec, register_strategy


def check_language_model(recipe: Any, kind: str) -> None:
    """The LM strategies need a causal-LM student on a language-model dataset, sharing the teacher's tokens."""
    if recipe.student.model.kind != "causal_lm" or recipe.data.dataset not in ("kjv", "lm"):
        raise ValueError(
            f"strategy {kind} distils causal language models: student.model.kind must be causal_lm and data.dataset "
            f"kjv or lm (got {recipe.student.model.kind!r} on {recipe.data.dataset!r})"
        )
    if recipe.distill.response_loss == "uld":
        raise ValueError(
            f"strategy {kind} passes generated tokens between teacher and student, which needs one tokenizer: "
            "uld (two tokenizers) works with the offline strategy"
        )


@register_strategy("seq_kd")
class SequenceKD(StrategySpec):
    kind: Literal["seq_kd"] = "seq_kd"

    def check(self, recipe: Any) -> None:
        check_language_model(recipe, self.kind)
        if recipe.teacher.cache is not None:
            raise ValueError(
                "strategy seq_kd trains on the teacher's own sequences, not the corpus: drop teacher.cache"
            )
        if (
            recipe.distill.response_loss is not None
            and recipe.distill.hard_weight == 0
            and recipe.distill.kd_weight == 0
        ):
            raise ValueError("strategy seq_kd: distill.kd_weight and distill.hard_weight are both 0: nothing to learn")

    def run(self, context: RunContext) -> list[Row]:
        from distill.lm.seq_kd import FOLDER, teacher_sequences, training_prompts
        from distill.tasks.lm import BlockDataset
        from distill.train.world import main_process_first

        recipe, task = context.recipe, context.task
        teacher = context.teacher().model
        settings = recipe.generation
        prompts = training_prompts(task.train, settings.prompt_tokens)
        folder = context.out / FOLDER  # several processes: the main one generates, the others read its file
        sequences = main_process_first(lambda: teacher_sequences(folder, teacher, task.tokenizer, prompts, settings))
        teacher_task = dataclasses.replace(task, train=BlockDataset(sequences))
        rows = []
        for seed in recipe.seeds:
            initial = context.build_student(seed, source=teacher)
            runs = [("baseline", None, task)] if recipe.student.baseline else []
            runs.append(("distilled", teacher, teacher_task))
            for role, role_teacher, role_task in runs:
                student = copy.deepcopy(initial)
                run_dir = context.seed_dir(seed) / role
                objective = context.objective(role_teacher, student, task=role_task)
                context.train(objective, run_dir, seed, f"{role} s{seed}", task=role_task)
                rows.append(context.row(role, seed, student, run_dir))
        return rows
