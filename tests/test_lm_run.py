"""A causal-LM recipe end to end: the lm dataset, layer-dropped student, token KD vs CE baseline (issue 17)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import transformers

from distill.run.export import export_row
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
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
    run = tmp_path / "run"
    results = run_recipe(recipe, raw, run, show_progress=False)
    assert results["metric_label"] == "next-token accuracy (test)" and results["head"] == "causal_lm"
    rows = {row["role"]: row for row in results["rows"]}
    assert set(rows) == {"baseline", "distilled"}
    assert all(0.0 <= row["score"]["mean"] <= 1.0 for row in rows.values())
    details = {role: row["details"] for role, row in rows.items()}
    # held-out KL to the teacher: distillation must move the student towards its teacher, CE must not
    kl = {role: entry["teacher_kl"] for role, entry in details.items()}
    assert math.isfinite(kl["distilled"]) and kl["distilled"] < 0.5 * kl["baseline"], kl
    for entry in [*details.values(), results["teacher"]["details"]]:
        assert entry["test_perplexity"] > 1 and entry["validation_perplexity"] > 1
        assert len(entry["generations"]) == 3 and entry["generation_tokens_per_second"] > 0
    assert details["distilled"]["train_tokens_per_second"] > 0
    # the perplexity is exp of the evaluation's mean next-token NLL, checked against the last epoch's record
    last = [json.loads(line) for line in (run / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()]
    eval_loss = [record["eval_loss"] for record in last if record.get("event") == "epoch"][-1]
    assert details["distilled"]["validation_perplexity"] == pytest.approx(math.exp(eval_loss), rel=1e-5)
    report = (run / "report.md").read_text()
    assert "KL to teacher" in report and "Generations on the same prompts" in report

    export_row(run, tmp_path / "export")
    generator = transformers.pipeline("text-generation", model=str(tmp_path / "export"), device="cpu")
    text = generator("In the beginning", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("In the beginning")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "export")
    assert reloaded.config.num_hidden_layers == 2


def test_a_classification_loss_for_a_language_model_is_refused_before_training(tmp_path):
    raw = lm_recipe(tmp_path)
    raw["distill"]["response_loss"] = "kd"
    recipe = validate_recipe(raw, "lm test")
    with pytest.raises(ValueError, match="'kd' is not a token-level loss for a causal LM; use one of forward_kl"):
        run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "seed-0").exists()
