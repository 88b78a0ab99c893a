"""End to end through the command line: run, resume, eval, inspect, and friendly errors."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.run.results import find_row

TINY_RECIPE = {
    "name": "tiny",
    "seeds": [0, 1],
    "data": {"dataset": "digits", "train_subset": 300},
    "teacher": {
        "model": {"kind": "mlp", "hidden": [64]},
        "train": {"epochs": 3, "batch_size": 32, "optimizer": {"lr": 0.01}},
    },
    "student": {
        "model": {"kind": "mlp", "hidden": [16]},
        "train": {"epochs": 4, "batch_size": 32, "optimizer": {"lr": 0.03}, "jitter": 1},
    },
    "distill": {
        "temperature": 2.0,
        "hard_weight": 0.5,
        "matches": [
            {
                "student": "relu1",
                "teacher": "relu1",
                "loss": "hidden_mse",
                "connector": "linear",
                "weight": 0.1,
            }
        ],
    },
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    recipe = folder / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    out = folder / "run"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet", "teacher.train.epochs=4"])
    assert result.exit_code == 0, result.output
    return recipe, out, result.output


def test_run_writes_the_whole_run_folder(finished_run):
    _, out, output = finished_run
    results = json.loads((out / "results.json").read_text())
    assert results["format_version"] == 2
    assert [row["role"] for row in results["rows"]] == ["baseline", "distilled"]
    for summary in results["rows"]:
        assert [entry["seed"] for entry in summary["seeds"]] == [0, 1]
        assert 0.3 < summary["score"]["mean"] <= 1.0 and summary["score"]["std"] >= 0
        assert results["teacher"]["parameters"] > summary["parameters"]
        assert summary["speedup"] > 0 and results["teacher"]["size_bytes"] > summary["size_bytes"]
    for path in (
        "report.md",
        "curves.png",
        "recipe.yaml",
        "teacher/metrics.jsonl",
        "seed-1/distilled/metrics.jsonl",
        "seed-0/baseline/checkpoints/latest.json",
        "seed-0/distilled/checkpoints/latest.json",
    ):
        assert (out / path).is_file(), path
    assert (out / "seed-0" / "distilled" / "checkpoints" / "epoch-0003" / "connectors.safetensors").is_file()
    assert "distilled" in output and "student, distilled" in (out / "report.md").read_text()
    teacher_epochs = [json.loads(line) for line in (out / "teacher" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in teacher_epochs if r["event"] == "epoch"]) == 4  # the override took effect


def test_existing_run_folder_is_never_overwritten_and_resume_reuses_it(finished_run):
    recipe, out, _ = finished_run
    before = (out / "results.json").read_text()
    refused = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert refused.exit_code == 2 and "already holds a run" in refused.output and "--resume" in refused.output
    assert (out / "results.json").read_text() == before
    resumed = CliRunner().invoke(
        app, ["run", str(recipe), "--out", str(out), "--quiet", "--resume", "teacher.train.epochs=4"]
    )
    assert resumed.exit_code == 0, resumed.output
    again = json.loads((out / "results.json").read_text())
    seeds = [row["seeds"] for row in again["rows"]]
    assert seeds == [row["seeds"] for row in json.loads(before)["rows"]]  # finished stages are reused, not retrained


def test_eval_reads_the_recipe_from_the_checkpoint(finished_run):
    _, out, _ = finished_run
    results = json.loads((out / "results.json").read_text())
    result = CliRunner().invoke(app, ["eval", str(out / "seed-1" / "distilled")])
    assert result.exit_code == 0, result.output
    expected = 100 * find_row(results, "distilled")["seeds"][1]["score"]
    assert f"test accuracy {expected:.2f}%" in result.output
    teacher = CliRunner().invoke(app, ["eval", str(out / "teacher")])
    assert f"{100 * results['teacher']['score']:.2f}%" in teacher.output


def test_inspect_lists_module_names_and_shapes(finished_run):
    recipe, _, _ = finished_run
    result = CliRunner().invoke(app, ["inspect", str(recipe), "--role", "teacher"])
    assert result.exit_code == 0, result.output
    assert "relu1" in result.output and "(2, 64)" in result.output and "head" in result.output


def test_bad_recipe_gives_a_key_path_and_exit_code_2(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({**TINY_RECIPE, "distill": {"response_loss": "kdd"}}))
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "distill.response_loss" in result.output and "did you mean 'kd'" in result.output


def test_bad_feature_layer_lists_the_valid_names(tmp_path):
    bad = {
        **TINY_RECIPE,
        "distill": {"matches": [{"student": "relu9", "teacher": "relu1", "connector": "linear"}]},
    }
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(bad))
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["run", str(recipe), "--out", str(tmp_path / "o"), "--quiet", "teacher.train.epochs=1"]
    )
    assert result.exit_code == 2
    assert "relu9" in result.output and "relu1" in result.output and "fc1" in result.output


ZOO_RECIPE = {
    "name": "zoo",
    "seeds": [0],
    "data": {"dataset": "mnist1d", "train_subset": 256},
    "teacher": {"model": {"kind": "cnn1d", "channels": [8, 16]}, "train": {"epochs": 1, "batch_size": 64}},
    "student": {
        "model": {"kind": "cnn1d", "channels": [4, 8]},
        "train": {"epochs": 2, "batch_size": 64, "log_every": 1},
        "baseline": False,
    },
    "distill": {
        "response_loss": "dkd",
        "response_options": {"beta": 4},
        "hard_weight": 1.0,
        "matches": [
            {"student": ["block1", "block2"], "teacher": ["block1", "block2"], "loss": "at", "weight": [500, 1000]},
            {"student": "flatten", "teacher": "flatten", "loss": "crd", "weight": 0.8, "options": {"nce_k": 32}},
            {
                "student": ["block1", "block2"],
                "teacher": ["block1", "block2"],
                "loss": "fsp",
                "connector": "conv1x1",
                "pretrain_epochs": 1,
            },
        ],
    },
}


def test_a_recipe_mixing_methods_runs_end_to_end(tmp_path):
    """Layer lists, options, a pre-training stage and index-aware CRD, all from one YAML file."""
    recipe = tmp_path / "zoo.yaml"
    recipe.write_text(yaml.safe_dump(ZOO_RECIPE))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    distilled = out / "seed-0" / "distilled"
    assert (distilled / "stage-pretrain" / "checkpoints" / "latest.json").is_file()
    steps = [json.loads(line) for line in (distilled / "metrics.jsonl").read_text().splitlines()]
    terms = {key for record in steps if record["event"] == "step" for key in record}
    assert {"dkd", "hard_ce", "at:block1->block1", "at:block2->block2", "crd:flatten->flatten"} <= terms
    assert not any(key.startswith("fsp") for key in terms)  # FSP trains in its stage only


def test_the_override_example_of_run_help_is_valid_for_every_shipped_recipe():
    import re

    from distill.cli import OverridesArgument
    from distill.run.recipe import builtin_recipes, load_recipe

    help_text = OverridesArgument.__metadata__[0].help
    example = re.search(r"e\.g\. (.*)$", help_text).group(1).split()
    for name in builtin_recipes():
        recipe, _ = load_recipe(name, example)
        assert recipe.seeds == [0] and recipe.student.train.epochs == 3
