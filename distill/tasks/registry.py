"""Datasets by registry: a dataset name leads to the loader of its task and to what its models read.

``register_dataset("my-data", loader, inputs="tensor")`` adds one: ``loader(recipe, data_dir) -> Task``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill.data.datasets import LOADERS as TENSOR_DATASETS
from distill.names import unknown_name_message
from distill.tasks.base import Task, TaskInputs
from distill.tasks.tensor import load_tensor_task
from distill.tasks.text_files import PRESETS as TEXT_PRESETS

Loader = Callable[[Any, "str | None"], Task]


@dataclass(frozen=True)
class DatasetEntry:
    loader: Loader
    inputs: TaskInputs


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Loader, inputs: TaskInputs) -> None:
    if name in _DATASETS and _DATASETS[name].loader is not loader:
        raise ValueError(f"dataset {name!r} is already registered")
    _DATASETS[name] = DatasetEntry(loader, inputs)


def unregister_dataset(name: str) -> None:
    _DATASETS.pop(name, None)


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def dataset_entry(name: str) -> DatasetEntry:
    if name not in _DATASETS:
        raise ValueError(unknown_name_message("dataset", name, dataset_names()))
    return _DATASETS[name]


def load_task(recipe: Any, data_dir: str | None = None) -> Task:
    """The task of ``recipe.data.dataset``, loaded from ``data_dir`` (default ``data.data_dir``)."""
    return dataset_entry(recipe.data.dataset).loader(recipe, data_dir)


def _load_text(recipe: Any, data_dir: str | None = None) -> Task:
    from distill.tasks.text_files import load_text_task_for

    return load_text_task_for(recipe, data_dir)


def _load_lm(recipe: Any, data_dir: str | None = None) -> Task:
    from distill.tasks.lm import load_lm_task

    return load_lm_task(recipe, data_dir)


for _name in TENSOR_DATASETS:
    register_dataset(_name, load_tensor_task, "tensor")
for _name in [*TEXT_PRESETS, "files"]:  # files: the recipe's own data.train, data.validation, ...
    register_dataset(_name, _load_text, "tokens")
for _name in ("kjv", "lm"):  # language modelling: the King James Bible, or the recipe's own corpus or pairs
    register_dataset(_name, _load_lm, "tokens")
