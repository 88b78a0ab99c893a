"""results.json: one entry per table row, each carrying its own model's measurements.

Format version 2 (``format_version``)::

    {"format_version": 2, "recipe", "strategy", "dataset", "metric", "metric_label", "train_examples",
     "evaluation_examples", "latency_probe", "torch_threads", "seeds",
     "teacher": {"score", "parameters", "size_bytes", "cpu_latency_ms", "members": [row, ...]},  # if any
     "rows": [{"role", "index", "label", "score": {"mean", "std"}, "seeds": [{"seed", "score", "weights"}],
               "parameters", "size_bytes", "cpu_latency_ms", "cpu_latency_spread", "speedup"}, ...],
     "latency": {"rounds", "max_spread", "interleaved", "warning"},                           # warning if busy
     "distillation_gain": distilled mean - baseline mean}                                       # if both

``role`` is what the model is (baseline, distilled, distilled_single, assistant, peer_alone, peer_mutual,
exit, generation, generation_ensemble, member) and ``index`` which one (peer, exit, generation, assistant
number); ``label`` is derived from both for people. Scores are fractions of the task's metric.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from distill.core.batch import Inputs
from distill.models.registry import count_parameters
from distill.run.latency import busy_warning, interleaved_samples, paired_speedup, quartile_spread
from distill.run.measure import file_size, mean_std
from distill.strategies.rows import Row

FORMAT_VERSION = 2
LABELS = {
    "baseline": "student, hard labels only",
    "distilled": "student, distilled",
    "distilled_single": "student, distilled from one ensemble member",
    "assistant": "assistant {index}",
    "peer_alone": "peer {index} alone",
    "peer_mutual": "peer {index} mutual",
    "exit": "exit {index}/{count}",
    "generation": "generation {index}",
    "generation_ensemble": "ensemble of generations 0-{index}",
    "member": "ensemble member {index}",
}


def row_label(role: str, index: int | None, count: int) -> str:
    """The table label of a (role, index); ``count`` is how many indices the role has."""
    return LABELS.get(role, role.replace("_", " ") + ("" if index is None else " {index}")).format(
        index=index, count=count
    )


def count_nonzero(model: nn.Module) -> int:
    """Parameters that are not zero: what pruning leaves."""
    return sum(int(parameter.count_nonzero()) for parameter in model.parameters())


def weights_bytes(model: nn.Module) -> int:
    """Bytes of a model's tensors (its safetensors file, give or take the header)."""
    return sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())


class LatencyMeter:
    """CPU latency of a run's models on one probe, all timed together, interleaved
    (:func:`~distill.run.latency.interleaved_samples`), once per architecture: models of the same
    structure (same ``repr`` and parameter shapes, e.g. a baseline and its distilled twin, or DML peers)
    share one measurement, so the table shows no timing noise between identical networks."""

    def __init__(self, probe: Inputs, repeats: int = 30) -> None:
        self.probe, self.repeats = probe, repeats
        self._samples: dict[tuple, list[float]] = {}

    @staticmethod
    def architecture(model: nn.Module) -> tuple:
        shapes = tuple((name, tuple(tensor.shape), tensor.dtype) for name, tensor in model.state_dict().items())
        return type(model).__qualname__, repr(model), shapes

    def measure(self, models: Sequence[nn.Module]) -> None:
        """Time every architecture among ``models`` not timed yet, interleaved with each other."""
        fresh: dict[tuple, nn.Module] = {}
        for model in models:
            key = self.architecture(model)
            if key not in self._samples:
                fresh.setdefault(key, model)
        if fresh:
            samples = interleaved_samples(list(fresh.values()), self.probe, min_rounds=self.repeats)
            self._samples.update(zip(fresh, samples, strict=True))

    def _of(self, model: nn.Module) -> list[float]:
        self.measure([model])
        return self._samples[self.architecture(model)]

    def __call__(self, model: nn.Module) -> float:
        """Median milliseconds of one forward pass."""
        return 1000 * statistics.median(self._of(model))

    def spread(self, model: nn.Module) -> float:
        return quartile_spread(self._of(model))

    def speedup(self, reference: nn.Module, model: nn.Module) -> float:
        """How many times faster ``model`` is than ``reference``, paired round by round."""
        return paired_speedup(self._of(reference), self._of(model))

    def summary(self) -> dict[str, Any]:
        rounds = min((len(samples) for samples in self._samples.values()), default=0)
        spreads = [quartile_spread(samples) for samples in self._samples.values()]
        return {"rounds": rounds, "max_spread": max(spreads, default=0.0), "interleaved": True}


def model_stats(model: nn.Module, latency: LatencyMeter, weights: Any = None) -> dict[str, Any]:
    """Parameters (those a deployment keeps), bytes on disk and CPU latency of one model."""
    deployed = getattr(model, "deployed_parameters", None)
    nonzero = getattr(model, "nonzero_parameters", None)
    return {
        "parameters": deployed() if deployed else count_parameters(model),
        "nonzero_parameters": nonzero() if nonzero else deployed() if deployed else count_nonzero(model),
        "size_bytes": file_size(weights) if weights is not None else weights_bytes(model),
        "cpu_latency_ms": latency(model),
        "cpu_latency_spread": latency.spread(model),
    }


def _groups(rows: Sequence[Row]) -> dict[tuple[str, int | None], list[Row]]:
    groups: dict[tuple[str, int | None], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.role, row.index), []).append(row)
    return groups


def _seed_entry(row: Row) -> dict[str, Any]:
    entry: dict[str, Any] = {"seed": row.seed, "score": row.score}
    if row.weights is not None:
        entry["weights"] = str(row.weights)
    return entry


def summarise(
    rows: Sequence[Row],
    describe: dict[str, Any],
    probe: Inputs,
    header: dict[str, Any],
    teacher: Any = None,
    teacher_score: float | None = None,
    repeats: int = 30,
) -> dict[str, Any]:
    """results.json from the rows of a run; ``teacher`` is a TeacherModel or None (no teacher)."""
    results: dict[str, Any] = {"format_version": FORMAT_VERSION, **header, **describe}
    results["torch_threads"] = torch.get_num_threads()
    latency = LatencyMeter(probe, repeats)
    teacher_model = teacher.model if teacher is not None else None
    latency.measure([model for model in (teacher_model, *(row.model for row in rows)) if model is not None])
    if teacher is not None:
        stats = model_stats(teacher.model, latency)
        stats["size_bytes"] = sum(file_size(path) for path in teacher.weights)
        members = _groups([row for row in rows if row.role == "member"])
        results["teacher"] = {"score": teacher_score, **stats}
        if members:
            results["teacher"]["members"] = [
                _summary_row(key, group, latency, None, len(members)) for key, group in members.items()
            ]
    students = [row for row in rows if row.role != "member"]
    groups = _groups(students)
    counts = {role: sum(1 for r, _ in groups if r == role) for role, _ in groups}
    results["rows"] = [
        _summary_row(key, group, latency, teacher_model, counts[key[0]]) for key, group in groups.items()
    ]
    results["latency"] = latency.summary()
    labels = {row["label"]: row["cpu_latency_spread"] for row in results["rows"]}
    if "teacher" in results:
        labels["the teacher"] = results["teacher"]["cpu_latency_spread"]
    warning = busy_warning(labels)
    if warning:
        results["latency"]["warning"] = warning
    by_role = {row["role"]: row for row in results["rows"] if row["index"] is None}
    if "baseline" in by_role and "distilled" in by_role:
        results["distillation_gain"] = by_role["distilled"]["score"]["mean"] - by_role["baseline"]["score"]["mean"]
    return results


def _summary_row(
    key: tuple[str, int | None], group: list[Row], latency: LatencyMeter, teacher: nn.Module | None, count: int
) -> dict[str, Any]:
    role, index = key
    first = group[0]
    stats = model_stats(first.model, latency, first.weights)
    if teacher is not None:
        stats["speedup"] = latency.speedup(teacher, first.model)
    summary = {
        "role": role,
        "index": index,
        "label": first.label or row_label(role, index, count),
        "score": mean_std([row.score for row in group]),
        "seeds": [_seed_entry(row) for row in group],
        **stats,
    }
    if first.details:
        summary["details"] = first.details
    return summary


def find_row(results: dict[str, Any], role: str, index: int | None = None) -> dict[str, Any]:
    """The entry of ``results["rows"]`` for (role, index); the error lists what there is."""
    for row in results["rows"]:
        if row["role"] == role and row["index"] == index:
            return row
    present = [(row["role"], row["index"]) for row in results["rows"]]
    raise KeyError(f"results have no row ({role!r}, {index!r}); rows: {present}")
