"""A causal-LM recipe end to end: the lm dataset, layer-dropped student, token KD vs CE baseline (issue 17)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distill.run.recipe import validate_recipe
from distill.run.runner import make_context, run_recipe
from tests.lm_helpers import kjv_files, tiny_lm_folder


def lm_recipe(tmp_path: Path, **distill) -> dict:
    teacher = tiny_lm_folder(tmp_path / "teacher", layers=4)
    files = kjv_files(tmp_path / "corpus")
    return {
        "name": "lm-tiny",
        "data": {"dataset": "lm", **{name: str(path) for name, path in files.items()}, "max_length": 32},
        "teacher": {
            "model": {"kind": "causal_lm", "path": str(teacher)},
            "train": {"epochs": 4, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
        },
        "student": {
            "model": {"kind": "causal_lm", "layers": 2},
            "train": {"epochs": 2, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 3e-3}},
        },
        "distill": {"response_loss": "forward_kl", "temperature": 1.0, "kd_weight": 1.0, **distill},
    }


def test_the_distilled_student_is_closer_to_its_teacher_than_the_ce_baseline(tmp_path):
    raw = lm_recipe(tmp_path)
    recipe = validate_recipe(raw, "lm test")
    results = run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    assert results["metric_label"] == "next-token accuracy (test)" and results["head"] == "causal_lm"
    rows = {row["role"]: row for row in results["rows"]}
    assert set(rows) == {"baseline", "distilled"}
    assert all(0.0 <= row["score"]["mean"] <= 1.0 for row in rows.values())
    # held-out KL to the teacher: distillation must move the student towards its teacher, CE must not
    context = make_context(recipe, raw, tmp_path / "run", resume=True, show_progress=False)
    teacher = context.teacher().model
    kls = {}
    for role, row in rows.items():
        student = context.build_student(0, source=teacher)
        from distill.train.checkpoint import load_module_weights

        load_module_weights(student, row["seeds"][0]["weights"])
        kls[role] = context.task.teacher_kl(student, teacher)
    assert math.isfinite(kls["distilled"]) and kls["distilled"] < 0.5 * kls["baseline"], kls
    assert (tmp_path / "run" / "seed-0" / "distilled" / "config.json").is_file() or any(
        (tmp_path / "run" / "seed-0" / "distilled").rglob("config.json")
    )


def test_a_classification_loss_for_a_language_model_is_refused_before_training(tmp_path):
    raw = lm_recipe(tmp_path)
    raw["distill"]["response_loss"] = "kd"
    recipe = validate_recipe(raw, "lm test")
    with pytest.raises(ValueError, match="'kd' is not a token-level loss for a causal LM; use one of forward_kl"):
        run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "seed-0").exists()
