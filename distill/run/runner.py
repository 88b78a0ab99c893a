"""Run a recipe end to end: load its task, run its strategy, measure every row, write the report.

Run folder::

    <out>/recipe.yaml                  the validated recipe, as run
    <out>/teacher/                     the teacher's metrics.jsonl and checkpoints (skipped with teacher.checkpoint)
    <out>/seed-<s>/<role>/             one folder per trained model (see each strategy's docstring)
    <out>/results.json, report.md, curves.png

Every stage checkpoints each epoch; ``resume=True`` finishes what is unfinished and reuses what is done.
The runner knows no strategy and no kind of data: it asks the recipe's strategy for rows and the task
for scores and probes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from distill.compress import run_compress
from distill.run.export import write_model_configs
from distill.run.recipe import Recipe
from distill.run.results import summarise
from distill.strategies.context import RunContext, check_multi_label
from distill.tasks.base import Task
from distill.tasks.registry import load_task
from distill.train.atomic import atomic_write_json, atomic_write_text
from distill.train.lock import RunLock
from distill.train.metrics_log import training_throughput
from distill.train.world import start_processes


def load_data(recipe: Recipe, data_dir: str | None = None) -> Task:
    """The recipe's task (its splits loaded, text tokenised)."""
    return load_task(recipe, data_dir)


def make_context(
    recipe: Recipe,
    raw: dict,
    out: Path,
    resume: bool | str = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> RunContext:
    return RunContext(recipe, raw, Path(out), load_data(recipe, data_dir), resume, show_progress)


def run_recipe(
    recipe: Recipe,
    raw: dict,
    out: str | Path,
    resume: bool | str = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Run every stage of ``recipe`` into ``out``; write results.json, report.md and curves.png.

    ``resume``: True continues every stage from its newest checkpoint that verifies; a checkpoint name
    (``epoch-0002``) continues the unfinished stage from that one. One process at a time writes ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start_processes(recipe.student.train.cpu)  # under torchrun: join the others before any step needs them
    with RunLock(out):
        return _run_locked(recipe, raw, out, resume, data_dir, show_progress)


def _run_locked(
    recipe: Recipe, raw: dict, out: Path, resume: bool | str, data_dir: str | None, show_progress: bool
) -> dict:
    from distill.report import write_report

    atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    context = make_context(recipe, raw, out, resume, data_dir, show_progress)
    strategy = recipe.strategy
    check_multi_label(context.task, recipe.distill.response_loss, strategy.kind)
    strategy.preflight(context)  # bad layer names and shapes fail here, before any training
    rows = strategy.run(context)
    rows += run_compress(context, rows, recipe.compress)  # the deployment table: one row per step
    write_model_configs(rows)  # transformer rows: config.json beside the weights, for `distill export`
    add_row_details(context, rows)
    results = summarise(
        rows,
        context.task.describe(),
        context.task.latency_probe(),
        header(recipe),
        teacher=context.trained_teacher,
        teacher_score=context.task.score(context.trained_teacher.model) if context.trained_teacher else None,
        repeats=context.task.latency_repeats,
    )
    if context.trained_teacher is not None and hasattr(context.task, "row_details"):
        results["teacher"]["details"] = context.task.row_details(context.trained_teacher.model, None, None)
    atomic_write_json(out / "results.json", results)
    write_report(results, out)
    return results


def add_row_details(context: RunContext, rows: list) -> None:
    """Training throughput, and what the task measures beside its score (a language model's perplexity, KL,
    speed, generations), for each (role, index)'s first seed, the one the report shows."""
    details = getattr(context.task, "row_details", None)
    teacher = context.trained_teacher.model if context.trained_teacher is not None else None
    first_seed = context.recipe.seeds[0]
    for row in rows:
        if row.seed == first_seed:
            run_dir = Path(row.weights).parents[2] if row.weights is not None else None
            if run_dir is not None:
                row.details.update(training_throughput(run_dir))
            if details is not None:
                row.details.update(details(row.model, teacher, run_dir))


def header(recipe: Recipe) -> dict[str, Any]:
    return {"recipe": recipe.name, "strategy": recipe.strategy.kind, "seeds": recipe.seeds}
