"""A tensor run's student exported as safetensors + JSON spec, reloaded by distill with the score the
run reported; rows that are not one model of their own are refused with the exportable ones."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.run.export import export_row
from distill.run.export_tensor import load_exported
from distill.run.recipe import validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.tasks.registry import load_task


def test_a_tensor_student_exports_and_reloads_with_its_reported_score(tmp_path):
    settings = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adam", "lr": 3e-3}}
    raw = {
        "data": {"dataset": "digits"},
        "teacher": {"model": {"kind": "mlp", "hidden": [64]}, "train": settings},
        "student": {"model": {"kind": "mlp", "hidden": [16]}, "train": settings},
        "distill": {"response_loss": "kd", "temperature": 4.0, "hard_weight": 0.5},
    }
    recipe = validate_recipe(raw)
    results = run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    assert "model.safetensors + distill_model.json" in result.output
    described = json.loads((tmp_path / "student" / "distill_model.json").read_text())
    assert described["model"]["kind"] == "mlp" and described["model"]["hidden"] == [16]
    assert described["input_shape"] == [1, 8, 8] and described["num_classes"] == 10

    task = load_task(recipe)
    for row in ("distilled", "baseline"):
        export_row(tmp_path / "run", tmp_path / row, row=row)
        model = load_exported(tmp_path / row)
        assert task.score(model) == pytest.approx(find_row(results, row)["score"]["mean"])
    assert sum(p.numel() for p in model.parameters()) == find_row(results, "baseline")["parameters"]

    with pytest.raises(FileNotFoundError, match=r"has no distill_model.json: pass a folder written by"):
        load_exported(tmp_path)
    with pytest.raises(ValueError, match=r"row 'exit' is not one model of its own .* export one of the rows"):
        from distill.run.export_tensor import row_spec

        row_spec(raw, "exit", 1)
