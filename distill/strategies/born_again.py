"""Born-again networks (Furlanello et al. 2018, "Born Again Neural Networks", ICML).

The student has the teacher's architecture. Generation 0 is the trained teacher; generation ``g`` is
a fresh network (initialised from seed ``s + 1000 g``) distilled from generation ``g − 1`` with the
recipe's ``distill:`` block. The paper finds later generations often beat their teacher, and the
ensemble of all generations (probabilities averaged) better still, which ``ensemble_generations`` scores.

Run folder: ``<out>/teacher/``, ``<out>/seed-<s>/generation-<g>/``. Rows ``generation`` (indexed by g)
and ``generation_ensemble`` (indexed by the last generation).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distill.strategies.context import PEER_SEED_STRIDE, RunContext, check_single_student
from distill.strategies.ensemble import EnsembleTeacher
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.transfer import check_no_transfer


@register_strategy("born_again")
class BornAgain(StrategySpec):
    kind: Literal["born_again"] = "born_again"
    generations: int = Field(3, ge=1)  # students after generation 0 (the teacher)
    ensemble_generations: bool = True  # also score the ensemble of all generations

    def check(self, recipe: Any) -> None:
        check_no_transfer(recipe, self.kind)
        check_single_student(recipe, self.kind)
        if not recipe.student.model.same_architecture(recipe.teacher.model):
            raise ValueError("strategy born_again: student.model must equal teacher.model (same architecture)")

    def run(self, context: RunContext) -> list[Row]:
        teacher = context.teacher().model
        rows = []
        for seed in context.recipe.seeds:
            generations = [teacher]
            for g in range(1, self.generations + 1):
                student = context.build_student(seed + PEER_SEED_STRIDE * g)
                run_dir = context.seed_dir(seed) / f"generation-{g}"
                context.train(context.objective(generations[-1], student), run_dir, seed, f"gen {g}")
                rows.append(context.row("generation", seed, student, run_dir, g))
                generations.append(student)
            if self.ensemble_generations:
                ensemble = EnsembleTeacher(generations, "probability")
                rows.append(context.row("generation_ensemble", seed, ensemble, index=len(generations) - 1))
        return rows
