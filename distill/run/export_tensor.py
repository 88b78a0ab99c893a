"""A tensor-model row of a run (MLP, CNN, CNN-1D, your own factory) as a folder distill reloads.

``distill export RUN_DIR --out FOLDER`` on a run over tensors writes ``model.safetensors`` (the row's
weights, checked to load strictly into the model the spec builds: connectors and method modules are
not part of it) and ``distill_model.json``: the model spec (``kind`` and its fields, as in a recipe),
the input shape, the number of classes and where it came from. :func:`load_exported` rebuilds the model
from the JSON and loads the weights; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from distill.models.registry import ModelContext, ModelSpec, build_model
from distill.train.atomic import atomic_write_json, save_module_atomic
from distill.train.checkpoint import load_module_weights

FORMAT = "distill-model"
VERSION = 1
SPEC_FILE = "distill_model.json"
WEIGHTS_FILE = "model.safetensors"
# rows whose model is recipe.student.model (one per seed); assistants use student.chain
STUDENT_ROLES = ("baseline", "distilled", "distilled_single", "peer_alone", "peer_mutual", "generation")


def row_spec(recipe: dict[str, Any], role: str, index: int | None) -> ModelSpec:
    """The model spec a row of ``role`` was built from, by the recipe the run saved."""
    student = recipe["student"]
    if role in STUDENT_ROLES:
        return ModelSpec.model_validate(student["model"])
    if role == "assistant" and index is not None and index < len(student.get("chain") or []):
        return ModelSpec.model_validate(student["chain"][index])
    raise ValueError(
        f"row {role!r} is not one model of its own (exits share one multi-exit network, an ensemble row is "
        f"several models); export one of the rows {', '.join(STUDENT_ROLES)} or an assistant"
    )


def export_tensor_row(run_dir: Path, out: Path, results: dict[str, Any], found: dict, entry: dict, weights: Path):
    """Write the row ``found`` (its seed ``entry``, weights file ``weights``) of a tensor run to ``out``."""
    if "input_shape" not in results:
        raise ValueError(f"{run_dir}/results.json predates tensor export (no input_shape): run the recipe again")
    recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    spec = row_spec(recipe, found["role"], found["index"])
    description = {
        "format": FORMAT,
        "version": VERSION,
        "model": spec.model_dump(mode="json"),
        "input_shape": list(results["input_shape"]),
        "num_classes": results["num_classes"],
        "dataset": results["dataset"],
        "row": found["label"],
        "seed": entry["seed"],
        "score": entry["score"],
        "metric": results["metric_label"],
    }
    model = _build(description)
    load_module_weights(model, weights)  # strict: the spec and the weights must agree
    out.mkdir(parents=True, exist_ok=True)
    save_module_atomic(model, out / WEIGHTS_FILE)
    atomic_write_json(out / SPEC_FILE, description)
    return model


def _build(description: dict[str, Any]) -> nn.Module:
    spec = ModelSpec.model_validate(description["model"])
    context = ModelContext(int(description["num_classes"]), input_shape=tuple(description["input_shape"]))
    return build_model(spec, context)


def load_exported(folder: str | Path) -> nn.Module:
    """The model of a folder written by ``distill export`` for a tensor run, in eval mode."""
    folder = Path(folder)
    path = folder / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {SPEC_FILE}: pass a folder written by `distill export`")
    description = json.loads(path.read_text())
    if description.get("format") != FORMAT or description.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} version {VERSION} file (format {description.get('format')!r})")
    model = _build(description)
    load_module_weights(model, folder / WEIGHTS_FILE)
    return model.eval()
