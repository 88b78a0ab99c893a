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

from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.core.method import BuildContext
from distill.core.schedules import as_schedule
from distill.data import DataSplits, load_dataset, random_shift
from distill.data.indexed import WithIndex, train_labels
from distill.models import build_model, count_parameters
from distill.models.soft_tree import SoftDecisionTree
from distill.run.measure import accuracy_on, cpu_latency_ms, file_size, mean_std, sample_batch
from distill.run.recipe import TEXT_DATASETS, Recipe
from distill.run.strategy_runs import (
    TrainFn,
    distil_through_chain,
    draw_tree,
    run_born_again,
    run_mutual,
    run_self_distill,
    train_ensemble,
    transfer_splits,
    tree_objective,
)
from distill.strategies.ensemble import EnsembleTeacher
from distill.train import Trainer
from distill.train.checkpoint import atomic_write_json, atomic_write_text, latest_checkpoint, load_module_weights
from distill.train.settings import TrainSettings

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


def trainer_for(settings: TrainSettings, raw: dict, resume: bool, show_progress: bool) -> TrainFn:
    """``train(objective, data, run_dir, seed, label)`` with the recipe's settings for one role."""

    def train(objective: Any, data: DataSplits, run_dir: Path, seed: int, label: str) -> dict:
        return _train(objective, data, settings, run_dir, seed, raw, resume, show_progress, label)

    return train


def build_teacher(
    recipe: Recipe, data: DataSplits, out: Path, raw: dict, resume: bool, show_progress: bool
) -> tuple[nn.Module, list[Path], list[dict]]:
    """Train the teacher (or load ``teacher.checkpoint``, or train every ensemble member); return it, its
    weights files and, for an ensemble, one entry per member."""
    if recipe.teacher.ensemble is not None:
        train = trainer_for(recipe.teacher.train, raw, resume, show_progress)
        ensemble, members = train_ensemble(recipe, data, out, train)
        return ensemble, [Path(member["weights"]) for member in members], members
    torch.manual_seed(recipe.teacher.seed)
    teacher = build_model(recipe.teacher.model, data.input_shape, data.num_classes)
    if recipe.teacher.checkpoint:
        load_module_weights(teacher, recipe.teacher.checkpoint)
        path = Path(recipe.teacher.checkpoint)
        return teacher, [path / "model.safetensors" if path.is_dir() else path], []
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
    return teacher, [latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"], []


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


def student_objective(recipe: Recipe, teacher: nn.Module | None, student: nn.Module, data: DataSplits) -> Any:
    """What a student trains on: labels (no teacher), the recipe's distillation, or a tree's own objective."""
    if isinstance(student, SoftDecisionTree):
        return tree_objective(recipe, student, teacher)
    if teacher is None:
        return SupervisedObjective(student)
    return make_distiller(recipe, teacher, student, data)


def check_matches(recipe: Recipe, data: DataSplits) -> None:
    """Build the distiller on untrained models first: a bad layer name fails now, not after the teacher trained."""
    if recipe.strategy.kind in ("mutual", "self_distill"):
        return  # no teacher: nothing to match
    teacher = build_model(recipe.teacher.model, data.input_shape, data.num_classes)
    student = build_model(recipe.student.model, data.input_shape, data.num_classes)
    student_objective(recipe, teacher, student, data)


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
    distil_data: DataSplits | None = None,
    kind_models: dict[str, nn.Module] | None = None,
) -> dict[str, list[dict]]:
    """Per seed: one initial student, trained on hard labels (baseline) and distilled, from the same weights.

    ``distil_data`` (default ``data``) is what the distilled student sees (a transfer set without labels,
    say). With ``student.chain`` the assistants are distilled first; with an ensemble teacher the student
    is also distilled from member 0 alone (``distilled single``), for comparison. ``kind_models``
    receives each assistant (rows whose model is not the student's, for their parameters and latency).
    """
    distil_data = distil_data or data
    train = trainer_for(recipe.student.train, raw, resume, show_progress)
    runs: dict[str, list[dict]] = {"baseline": [], "distilled": []}
    for seed in recipe.seeds:
        torch.manual_seed(seed)
        initial = build_model(recipe.student.model, data.input_shape, data.num_classes)
        seed_dir = out / f"seed-{seed}"
        teachers: dict[str, nn.Module | None] = {"baseline": None} if recipe.student.baseline else {}
        teachers["distilled"] = teacher
        if recipe.student.chain:
            make = functools.partial(_objective, recipe, distil_data)
            assistants = distil_through_chain(recipe, teacher, distil_data, seed_dir, seed, make, train)
            for number, (assistant, entry) in enumerate(assistants):
                runs.setdefault(f"assistant {number}", []).append(entry)
                if kind_models is not None:
                    kind_models[f"assistant {number}"] = assistant
            teachers["distilled"] = assistants[-1][0]
        if isinstance(teacher, EnsembleTeacher) and len(teacher.members) > 1:
            teachers["distilled single"] = teacher.members[0]
        for kind, kind_teacher in teachers.items():
            student = copy.deepcopy(initial)  # every kind starts from the same weights
            kind_data = data if kind_teacher is None else distil_data
            run_dir = seed_dir / kind.replace(" ", "-")
            train(
                student_objective(recipe, kind_teacher, student, kind_data), kind_data, run_dir, seed, f"{kind} s{seed}"
            )
            runs.setdefault(kind, []).append({"seed": seed, **_student_entry(student, run_dir, data)})
            if isinstance(student, SoftDecisionTree) and kind == "distilled":
                draw_tree(student, data, run_dir / "tree.png")
    order = ["baseline", *(kind for kind in runs if kind.startswith("assistant")), "distilled", "distilled single"]
    return {kind: runs[kind] for kind in order if runs.get(kind)}


def _objective(recipe: Recipe, data: DataSplits, teacher: nn.Module, student: nn.Module) -> Any:
    return student_objective(recipe, teacher, student, data)


def summarise(
    recipe: Recipe,
    data: DataSplits,
    teacher: nn.Module | None,
    teacher_weights: list[Path],
    runs: dict[str, list[dict]],
    members: list[dict] | None = None,
    kind_models: dict[str, nn.Module] | None = None,
) -> dict:
    """results.json: accuracy mean ± std per student kind, and what the student saves (strategies without a
    teacher, mutual and self_distill, have no teacher entry and no speed-up)."""
    probe = sample_batch(data.test, LATENCY_BATCH)
    student = build_model(recipe.student.model, data.input_shape, data.num_classes)
    student_latency = cpu_latency_ms(student, probe)
    weights = next((entry["weights"] for entries in runs.values() for entry in entries if "weights" in entry), None)
    results: dict[str, Any] = {
        "recipe": recipe.name,
        "dataset": data.name,
        "strategy": recipe.strategy.kind,
        "train_examples": len(data.train),
        "test_examples": len(data.test),
        "seeds": recipe.seeds,
        "latency_batch": LATENCY_BATCH,
        "torch_threads": torch.get_num_threads(),
        "student": {
            "parameters": count_parameters(student),
            "size_bytes": file_size(weights) if weights else weights_bytes(student),
            "cpu_latency_ms": student_latency,
        },
        "students": student_summaries(runs),
    }
    if teacher is not None:
        teacher_latency = cpu_latency_ms(teacher, probe)
        results["teacher"] = {
            "test_accuracy": accuracy_on(teacher, data.test),
            "parameters": count_parameters(teacher),
            "size_bytes": sum(file_size(path) for path in teacher_weights),
            "cpu_latency_ms": teacher_latency,
            **({"members": members} if members else {}),
        }
        results["student"]["speedup"] = teacher_latency / student_latency
    for kind, model in (kind_models or {}).items():
        results["students"][kind]["model"] = model_stats(model, probe, results.get("teacher"))
    return with_gain(results)


def model_stats(model: nn.Module, probe: torch.Tensor, teacher: dict | None) -> dict:
    """Parameters, tensor bytes, CPU latency (and speed-up over the teacher) of a row's own model."""
    deployed = getattr(model, "deployed_parameters", None)
    stats: dict[str, Any] = {
        "parameters": deployed() if deployed else count_parameters(model),
        "size_bytes": weights_bytes(model),
        "cpu_latency_ms": cpu_latency_ms(model, probe),
    }
    if teacher is not None:
        stats["speedup"] = teacher["cpu_latency_ms"] / stats["cpu_latency_ms"]
    return stats


def weights_bytes(model: nn.Module) -> int:
    """Bytes of a model's tensors (its safetensors file, give or take the header)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


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
    if "baseline" in students and "distilled" in students:
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
        from distill.run.text_pipeline import run_text_recipe  # imports transformers only for text recipes

        results = run_text_recipe(recipe, raw, out, resume, data_dir, show_progress)
        atomic_write_json(out / "results.json", results)
        write_report(results, out)
        return results
    data = load_data(recipe, data_dir)
    check_matches(recipe, data)
    results = _run_strategy(recipe, data, out, raw, resume, show_progress)
    atomic_write_json(out / "results.json", results)
    write_report(results, out)
    return results


def _run_strategy(recipe: Recipe, data: DataSplits, out: Path, raw: dict, resume: bool, show_progress: bool) -> dict:
    kind = recipe.strategy.kind
    train = trainer_for(recipe.student.train, raw, resume, show_progress)
    kind_models: dict[str, nn.Module] = {}
    if kind == "mutual":
        return summarise(recipe, data, None, [], run_mutual(recipe, data, out, train))
    if kind == "self_distill":
        runs = run_self_distill(recipe, data, out, train, kind_models)
        return summarise(recipe, data, None, [], runs, kind_models=kind_models)
    teacher_data, distil_data, student_data = transfer_splits(recipe, data)
    teacher, teacher_weights, members = build_teacher(recipe, teacher_data, out, raw, resume, show_progress)
    if kind == "born_again":
        make = functools.partial(_objective, recipe, data)
        runs = run_born_again(recipe, teacher, data, out, make, train, kind_models)
    else:
        runs = run_students(recipe, teacher, student_data, out, raw, resume, show_progress, distil_data, kind_models)
    return summarise(recipe, student_data, teacher, teacher_weights, runs, members, kind_models)
