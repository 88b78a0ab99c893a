"""``distill export --format onnx`` for a run's trained rows, and the artefacts of compressed rows.

ONNX: the row's model (rebuilt as :mod:`distill.run.export` does for the other formats) exported with
dynamic batch (and sequence) axes into ``model.onnx``, checked against the PyTorch model on the first
256 examples of the run's evaluation split (max |logit difference| ≤ 1e-3 and argmax agreement ≥ 0.99,
else :class:`~distill.compress.onnx_model.ParityError`), beside the files that describe it:
``config.json`` with the label names and the tokenizer for a transformer (so ``distill predict`` serves
it with ONNX Runtime), ``distill_model.json`` for a tensor model. A compressed row is already an
artefact: the folder of its ``export`` step is copied as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from torch import nn


def write_onnx(run_dir: Path, model: nn.Module, out: Path, data_dir: str | None) -> dict[str, float]:
    """``model.onnx`` in ``out`` (which holds the model's other files), checked for parity on the run's
    held-out inputs; the PyTorch weights file is removed, so the folder is the ONNX artefact. Returns the
    parity report."""
    from distill.compress.onnx_model import OnnxModel, export_onnx, held_out_inputs, parity
    from distill.run.recipe import load_recipe
    from distill.tasks.registry import load_task

    recipe, _ = load_recipe(str(run_dir / "recipe.yaml"))
    task = load_task(recipe, data_dir)
    export_onnx(model, task.sample_inputs(), out / "model.onnx")

    report = parity(model, OnnxModel(out / "model.onnx"), held_out_inputs(task), 1e-3, 0.99, f"{out}/model.onnx")
    (out / "model.safetensors").unlink(missing_ok=True)
    return report


def copy_compressed(found: dict[str, Any], weights: Path, out: Path, format: str | None) -> str:
    """The artefact folder of a compressed row (an ``export`` step's output) copied to ``out``; its format."""
    folder = weights.parent
    kind = "onnx" if weights.suffix == ".onnx" else "hf" if (folder / "config.json").is_file() else None
    if kind is None or not folder.name.split("-", 1)[-1] == "export":
        raise ValueError(
            f"row {found['label']!r} is a compression step's PyTorch weights (pruned tensors stored compressed), "
            "not a served artefact: end the compress list with {export: {format: onnx}} (or hf) and export that row"
        )
    if format not in (None, kind):
        raise ValueError(f"row {found['label']!r} was exported as {kind} by its compress step; pass --format {kind}")
    shutil.copytree(folder, out, dirs_exist_ok=True)
    return kind
