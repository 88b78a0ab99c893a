"""Run a text recipe (SST-2, CoNLL-2003) end to end with Hugging Face teacher and students.

Same run folder and results.json as the tensor pipeline (``distill.pipeline``)::

    <out>/teacher/                       the fine-tuned teacher (skipped with teacher.checkpoint)
    <out>/seed-<s>/baseline/             the student fine-tuned on labels alone (same initialisation)
    <out>/seed-<s>/assistant-<n>/        teacher assistants of student.chain, in order
    <out>/seed-<s>/distilled/            the student distilled from the last link of the chain

Scores are accuracy (SST-2, dev split: its test labels are not public) or entity-level micro F1
(CoNLL-2003, test split), read at the final epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.capture.hf_structure import layout_of
from distill.core.cache import TeacherCache
from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.core.schedules import as_schedule
from distill.models import count_parameters
from distill.models.hf.loading import load_classifier, load_tokenizer, token_probe
from distill.models.hf.student import layer_pairs, student_from_teacher
from distill.run.measure import cpu_latency_ms, file_size
from distill.run.recipe import Recipe
from distill.run.runner import student_summaries, with_gain
from distill.tasks.text import TextTask, load_text_task
from distill.train import Trainer, evaluate
from distill.train.checkpoint import latest_checkpoint, load_module_weights
from distill.train.settings import TrainSettings

LATENCY_SHAPE = (32, 64)  # batch x length of the CPU latency probe
SCORE_SPLIT = {"sst2": "dev", "conll2003": "test"}


def _matches(recipe: Recipe, student: nn.Module, teacher: nn.Module) -> list[FeatureMatch]:
    """Recipe matches; those with a layer_map are paired for this student/teacher depth."""
    depths = layout_of(student).num_layers, layout_of(teacher).num_layers
    matches = []
    for m in recipe.distill.matches:
        student_layers, teacher_layers = m.student, m.teacher
        if m.layer_map is not None:
            student_layers, teacher_layers = layer_pairs(m.student, *depths, m.layer_map, m.embeddings)  # type: ignore[arg-type]
        weight = [as_schedule(w) for w in m.weight] if isinstance(m.weight, list) else as_schedule(m.weight)
        matches.append(
            FeatureMatch(
                student_layers, teacher_layers, m.loss, weight, m.connector, m.connector_hidden, m.name, m.options
            )
        )
    return matches


def make_text_distiller(
    recipe: Recipe, teacher: nn.Module, student: nn.Module, task: TextTask, cache: TeacherCache | None = None
) -> Distiller:
    spec = recipe.distill
    return Distiller(
        teacher,
        student,
        spec.response_loss,
        spec.temperature,
        spec.kd_weight,
        spec.hard_weight,
        _matches(recipe, student, teacher),
        sample_inputs=task.sample_inputs(),
        response_options=spec.response_options,
        teacher_cache=cache,
    )


def _train(objective: Any, task: TextTask, settings: TrainSettings, run_dir: Path, seed: int, ctx: dict) -> None:
    torch.manual_seed(seed)
    first = next(iter(task.evaluation))
    Trainer(
        objective,
        task.train,
        (first, task.evaluation[first]),
        settings,
        run_dir,
        seed=seed,
        recipe=ctx["raw"],
        show_progress=ctx["show_progress"],
        description=ctx["label"],
        collate_fn=task.collate,
        train_sampler=task.batches(settings.batch_size),
        metric=task.metric,
    ).fit(resume=ctx["resume"])


def task_scores(model: nn.Module, task: TextTask) -> dict[str, float]:
    """The task's headline metric (fraction) on each evaluation split."""
    from torch.utils.data import DataLoader

    from distill.core.batch import call_model, logits_of

    model.eval()
    result = {}
    for split, dataset in task.evaluation.items():
        loader = DataLoader(dataset, batch_size=128, collate_fn=task.collate)
        metrics = evaluate(lambda inputs: logits_of(call_model(model, inputs)), loader, metric=task.metric)
        result[split] = metrics[task.score_name]
    return result


def _student(recipe: Recipe, previous: nn.Module, layers: int, seed: int) -> nn.Module:
    spec = recipe.student.model
    return student_from_teacher(previous, layers, spec.layer_map, spec.init, seed)  # type: ignore[arg-type]


def run_text_recipe(
    recipe: Recipe,
    raw: dict,
    out: Path,
    resume: bool = False,
    data_dir: str | None = None,
    show_progress: bool = True,
) -> dict:
    """Teacher, then per seed a baseline and a distilled student (through the chain); returns results.json."""
    teacher_spec = recipe.teacher.model
    tokenizer = load_tokenizer(teacher_spec.path, teacher_spec.trust_remote_code)
    data = recipe.data
    task = load_text_task(
        data.dataset, tokenizer, data_dir or data.data_dir, data.train_subset, data.split_seed, data.max_length
    )
    teacher = load_classifier(
        teacher_spec.path,
        task.kind,
        task.num_labels,
        recipe.teacher.seed,
        trust_remote_code=teacher_spec.trust_remote_code,
    )
    ctx = {"raw": raw, "resume": resume, "show_progress": show_progress, "label": "teacher"}
    # Build the distiller on the untrained teacher first: a bad match fails now, not after fine-tuning.
    make_text_distiller(recipe, teacher, _student(recipe, teacher, recipe.student.model.layers, 0), task)
    teacher.requires_grad_(True)  # the check froze it; fine-tuning needs its parameters
    if recipe.teacher.checkpoint:
        load_module_weights(teacher, recipe.teacher.checkpoint)
        teacher_weights = Path(recipe.teacher.checkpoint)
    else:
        _train(SupervisedObjective(teacher), task, recipe.teacher.train, out / "teacher", recipe.teacher.seed, ctx)
        teacher_weights = latest_checkpoint(out / "teacher" / "checkpoints")
    cache = TeacherCache()  # the teacher's outputs, shared by every seed's first chain step
    runs: dict[str, list[dict]] = {"baseline": [], "distilled": []}
    depths = [*recipe.student.chain, recipe.student.model.layers]
    for seed in recipe.seeds:
        if recipe.student.baseline:
            student = _student(recipe, teacher, depths[-1], seed)
            run_dir = out / f"seed-{seed}" / "baseline"
            _train(
                SupervisedObjective(student),
                task,
                recipe.student.train,
                run_dir,
                seed,
                {**ctx, "label": f"baseline s{seed}"},
            )
            runs["baseline"].append(_entry(student, task, run_dir, seed))
        previous, previous_cache = teacher, cache
        for depth in depths:
            student = _student(recipe, previous, depth, seed)
            last = depth == depths[-1]
            run_dir = out / f"seed-{seed}" / ("distilled" if last else f"assistant-{depth}")
            distiller = make_text_distiller(recipe, previous, student, task, previous_cache)
            _train(distiller, task, recipe.student.train, run_dir, seed, {**ctx, "label": f"{run_dir.name} s{seed}"})
            previous, previous_cache = student, TeacherCache()
        runs["distilled"].append(_entry(previous, task, out / f"seed-{seed}" / "distilled", seed))
    return _summary(recipe, task, teacher, teacher_weights, runs)


def _entry(model: nn.Module, task: TextTask, run_dir: Path, seed: int) -> dict:
    split = SCORE_SPLIT[task.name]
    weights = latest_checkpoint(run_dir / "checkpoints") / "model.safetensors"
    return {"seed": seed, "test_accuracy": task_scores(model, task)[split], "weights": str(weights)}


def _summary(recipe: Recipe, task: TextTask, teacher: nn.Module, teacher_weights: Path, runs: dict) -> dict:
    probe = token_probe(teacher, *LATENCY_SHAPE)
    student = _student(recipe, teacher, recipe.student.model.layers, 0)
    teacher_ms, student_ms = cpu_latency_ms(teacher, probe, repeats=10), cpu_latency_ms(student, probe, repeats=10)
    weights = teacher_weights / "model.safetensors" if teacher_weights.is_dir() else teacher_weights
    metric = "accuracy" if task.kind == "sequence" else "entity F1"
    students = student_summaries(runs)
    results = {
        "recipe": recipe.name,
        "dataset": task.name,
        "metric_label": f"{metric} ({SCORE_SPLIT[task.name]})",
        "train_examples": len(task.train),
        "seeds": recipe.seeds,
        "latency_batch": f"{LATENCY_SHAPE[0]} x {LATENCY_SHAPE[1]} tokens",
        "torch_threads": torch.get_num_threads(),
        "teacher": {
            "test_accuracy": task_scores(teacher, task)[SCORE_SPLIT[task.name]],
            "parameters": count_parameters(teacher),
            "size_bytes": file_size(weights),
            "cpu_latency_ms": teacher_ms,
        },
        "student": {
            "parameters": count_parameters(student),
            "size_bytes": file_size(runs["distilled"][0]["weights"]),
            "cpu_latency_ms": student_ms,
            "speedup": teacher_ms / student_ms,
        },
        "students": students,
    }
    return with_gain(results)
