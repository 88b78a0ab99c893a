"""Run a recipe end to end: teacher, hard-label baseline and distilled student per seed, then measure.

Run folder layout::

    <out>/recipe.yaml                      the validated recipe, as run
    <out>/teacher/                         metrics.jsonl, checkpoints/ (skipped with teacher.checkpoint)
    <out>/seed-<s>/baseline/               the student on hard labels alone
    <out>/seed-<s>/distilled/              the same initial student, distilled
    <out>/results.json, report.md, curves.png

Every stage checkpoints each epoch; ``resume=True`` finishes what is unfinished and reuses what is done.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from distill.checkpoint import atomic_write_json, atomic_write_text, latest_checkpoint, load_module_weights
from distill.config import TEXT_DATASETS, Recipe
from distill.data import DataSplits, load_dataset, random_shift
from distill.data.indexed import WithIndex, train_labels
from distill.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.measure import accuracy_on, cpu_latency_ms, file_size, mean_std, sample_batch
from distill.methods.base import BuildContext
from distill.models import build_model, count_parameters
from distill.schedules import as_schedule
from distill.train import Trainer
from distill.train_settings import TrainSettings

LATENCY_BATCH = 256


def load_data(recipe: Recipe, data_dir: str | None = None) -> DataSplits:
    spec = recipe.data
    if spec.dataset in TEXT_DATASETS:
        raise ValueError(
            f"dataset {spec.dataset!r} is text: run the whole recipe with `distill run` (train-teacher, eval and "
            "inspect work on tensor datasets; a text run folder keeps every model's checkpoint)"
        )
    return load_dataset(spec.dataset, data_dir or spec.data_dir, spec.val_size, spec.train_subset, spec.split_seed)


def _jitter(settings: TrainSettings):
    return functools.partial(random_shift, max_shift=settings.jitter) if settings.jitter else None


def _train(
    objective: Any,
    data: DataSplits,
    settings: TrainSettings,
    run_dir: Path,
    seed: int,
    raw: dict,
    resume: bool,
    show_progress: bool,
    description: str,
) -> dict:
    needs_index = getattr(objective, "needs_index", False)
    trainer = Trainer(
        objective,
        WithIndex(data.train) if needs_index else data.train,
        data.eval_split,
        settings,
        run_dir,
        seed=seed,
        recipe=raw,
        input_transform=_jitter(settings),
        show_progress=show_progress,
        description=description,
    )
    return trainer.fit(resume=resume)


def build_teacher(
    recipe: Recipe, data: DataSplits, out: Path, raw: dict, resume: bool, show_progress: bool
) -> tuple[nn.Module, Path]:
    """Train the teacher (or load ``teacher.checkpoint``); return it and its weights file."""
    torch.manual_seed(recipe.teacher.seed)
    teacher = build_model(recipe.teacher.model, data.input_shape, data.num_classes)
    if recipe.teacher.checkpoint:
        load_module_weights(teacher, recipe.teacher.checkpoint)
        path = Path(recipe.teacher.checkpoint)
        return teacher, path / "model.safetensors" if path.is_dir() else path
    run_dir = out / "teacher"
    _train(
        SupervisedObjective(teacher),
        data,
        recipe.teacher.train,
        run_dir,
        recipe.teacher.seed,
        raw,
        resume,
        show_progress,
        "teacher",
    )
    return teacher, latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"


def make_distiller(recipe: Recipe, teacher: nn.Module, student: nn.Module, data: DataSplits) -> Distiller:
    spec = recipe.distill
    matches = [
        FeatureMatch(
            m.student,
            m.teacher,
            m.loss,
            [as_schedule(w) for w in m.weight] if isinstance(m.weight, list) else as_schedule(m.weight),
            m.connector,
            m.connector_hidden,
            m.name,
            m.options,
            m.stage,
            m.pretrain_epochs,
        )
        for m in spec.matches
    ]
    context = BuildContext(num_examples=len(data.train), num_classes=data.num_classes, train_labels=train_labels(data))
    return Distiller(
        teacher,
        student,
        spec.response_loss,
        spec.temperature,
        spec.kd_weight,
        spec.hard_weight,
        matches,
        sample_inputs=sample_batch(data.train, 8),
        response_options=spec.response_options,
        build_context=context,
    )


def check_matches(recipe: Recipe, data: DataSplits) -> None:
    """Build the distiller on untrained models first: a bad layer name fails now, not after the teacher trained."""
    teacher = build_model(recipe.teacher.model, data.input_shape, data.num_classes)
    student = build_model(recipe.student.model, data.input_shape, data.num_classes)
    make_distiller(recipe, teacher, student, data)


def _student_entry(model: nn.Module, run_dir: Path, data: DataSplits) -> dict:
    weights = latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"
    return {"test_accuracy": accuracy_on(model, data.test), "weights": str(weights)}


def run_students(
    recipe: Recipe,
    teacher: nn.Module,
    data: DataSplits,
    out: Path,
    raw: dict,
    resume: bool,
    show_progress: bool,
) -> dict[str, list[dict]]:
    """Per seed: one initial student, trained on hard labels (baseline) and distilled, from the same weights."""
    runs: dict[str, list[dict]] = {"baseline": [], "distilled": []}
    kinds = list(runs) if recipe.student.baseline else ["distilled"]
    for seed in recipe.seeds:
        torch.manual_seed(seed)
        initial = build_model(recipe.student.model, data.input_shape, data.num_classes)
        for kind in kinds:
            student = copy.deepcopy(initial)  # both kinds start from the same weights
            objective = (
                SupervisedObjective(student) if kind == "baseline" else make_distiller(recipe, teacher, student, data)
            )
            run_dir = out / f"seed-{seed}" / kind
            label = f"{kind} s{seed}"
            _train(objective, data, recipe.student.train, run_dir, seed, raw, resume, show_progress, label)
            runs[kind].append({"seed": seed, **_student_entry(student, run_dir, data)})
    return runs


def summarise(
    recipe: Recipe, data: DataSplits, teacher: nn.Module, teacher_weights: Path, runs: dict[str, list[dict]]
) -> dict:
    """results.json: accuracy mean ± std per student kind, and what the student saves."""
    probe = sample_batch(data.test, LATENCY_BATCH)
    student = build_model(recipe.student.model, data.input_shape, data.num_classes)
    teacher_latency = cpu_latency_ms(teacher, probe)
    student_latency = cpu_latency_ms(student, probe)
    students = student_summaries(runs)
    results = {
        "recipe": recipe.name,
        "dataset": data.name,
        "train_examples": len(data.train),
        "test_examples": len(data.test),
        "seeds": recipe.seeds,
        "latency_batch": LATENCY_BATCH,
        "torch_threads": torch.get_num_threads(),
        "teacher": {
            "test_accuracy": accuracy_on(teacher, data.test),
            "parameters": count_parameters(teacher),
            "size_bytes": file_size(teacher_weights),
            "cpu_latency_ms": teacher_latency,
        },
        "student": {
            "parameters": count_parameters(student),
            "size_bytes": file_size(runs["distilled"][0]["weights"]),
            "cpu_latency_ms": student_latency,
            "speedup": teacher_latency / student_latency,
        },
        "students": students,
    }
    return with_gain(results)


def student_summaries(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Mean ± std of the score per student kind (baseline, distilled), with the per-seed entries."""
    return {
        kind: {"test_accuracy": mean_std([entry["test_accuracy"] for entry in entries]), "seeds": entries}
        for kind, entries in runs.items()
        if entries
    }


def with_gain(results: dict) -> dict:
    """Add the distilled student's gain over the hard-label baseline, when both ran."""
    students = results["students"]
    if "baseline" in students:
        results["distillation_gain"] = (
            students["distilled"]["test_accuracy"]["mean"] - students["baseline"]["test_accuracy"]["mean"]
        )
    return results


def run_recipe(
    recipe: Recipe,
    raw: dict,
    out: str | Path,
    resume: bool = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Run every stage of ``recipe`` into ``out``; write results.json, report.md and curves.png."""
    from distill.report import write_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
    if recipe.data.dataset in TEXT_DATASETS:
        from distill.hf.pipeline import run_text_recipe  # imports transformers only for text recipes

        results = run_text_recipe(recipe, raw, out, resume, data_dir, show_progress)
        atomic_write_json(out / "results.json", results)
        write_report(results, out)
        return results
    data = load_data(recipe, data_dir)
    check_matches(recipe, data)
    teacher, teacher_weights = build_teacher(recipe, data, out, raw, resume, show_progress)
    runs = run_students(recipe, teacher, data, out, raw, resume, show_progress)
    results = summarise(recipe, data, teacher, teacher_weights, runs)
    atomic_write_json(out / "results.json", results)
    write_report(results, out)
    return results
