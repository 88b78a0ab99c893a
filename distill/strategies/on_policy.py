"""On-policy distillation for causal LMs (GKD, Agarwal et al. 2024; :mod:`distill.lm.on_policy`): with
probability ``student_data_fraction`` (λ) a batch's completions are the student's own, scored by the teacher.

Per seed, from the same initial student: ``baseline`` (next-token CE) and ``distilled`` (the recipe's
token-level loss, on-policy with probability λ; λ = 0 is the offline strategy). Completions follow the
recipe's ``generation:`` settings (GKD samples at temperature 1).

Run folder: ``<out>/seed-<s>/{baseline, distilled}/``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field

from distill.strategies.context import RunContext
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.seq_kd import check_language_model


@register_strategy("on_policy")
class OnPolicy(StrategySpec):
    kind: Literal["on_policy"] = "on_policy"
    student_data_fraction: float = Field(0.5, ge=0.0, le=1.0)  # λ of GKD

    def check(self, recipe: Any) -> None:
        check_language_model(recipe, self.kind)
        if recipe.distill.response_loss is None:
            raise ValueError("strategy on_policy: distill.response_loss must be a token-level loss (GKD uses jsd)")

    def run(self, context: RunContext) -> list[Row]:
        from distill.lm.on_policy import OnPolicyObjective

        recipe, task = context.recipe, context.task
        teacher = context.teacher().model
        rows = []
        for seed in recipe.seeds:
            initial = context.build_student(seed, source=teacher)
            runs = [("baseline", None)] if recipe.student.baseline else []
            runs.append(("distilled", teacher))
            for role, role_teacher in runs:
                student = copy.deepcopy(initial)
                run_dir = context.seed_dir(seed) / role
                objective = context.objective(role_teacher, student)
                if role_teacher is not None:
                    fraction = self.student_data_fraction
                    objective = OnPolicyObjective(objective, fraction, recipe.generation, task.tokenizer, seed)
                context.train(objective, run_dir, seed, f"{role} s{seed}", task=task)
                rows.append(context.row(role, seed, student, run_dir))
        return rows
