"""Text recipes end to end on a tiny saved BERT (real SST-2 / CoNLL rows, no download)."""

from __future__ import annotations

import json

import pytest
import transformers

from distill.models.hf.loading import packaged_minilm_path
from distill.run.recipe import RecipeError, load_recipe, validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from tests.hf_models import tiny_config


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A 4-layer BERT with the packaged tokenizer's vocabulary, saved like any Hugging Face folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = transformers.AutoTokenizer.from_pretrained(packaged_minilm_path())
    transformers.BertModel(tiny_config(vocab_size=tokenizer.vocab_size, max_position_embeddings=128)).save_pretrained(
        folder
    )
    tokenizer.save_pretrained(folder)
    return str(folder)


def _recipe(folder: str, dataset: str, **student) -> dict:
    train = {"epochs": 1, "batch_size": 16, "optimizer": {"lr": 1e-3}}
    return {
        "name": f"tiny-{dataset}",
        "seeds": [0],
        "data": {"dataset": dataset, "train_subset": 48, "max_length": 32},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": train},
        "student": {"model": {"kind": "hf", "layers": 1, "layer_map": "skip"}, "train": train, **student},
        "distill": {
            "temperature": 2.0,
            "hard_weight": 1.0,
            "matches": [
                {
                    "student": "hidden",
                    "teacher": "hidden",
                    "layer_map": "skip",
                    "embeddings": True,
                    "loss": "hidden_mse",
                },
                {"student": "attention", "teacher": "attention", "layer_map": "skip", "loss": "attention_kl"},
            ],
        },
    }


def test_sst2_recipe_with_an_assistant_chain(tiny_folder, tmp_path):
    raw = _recipe(tiny_folder, "sst2", chain=[2])
    results = run_recipe(validate_recipe(raw), raw, tmp_path, show_progress=False)
    assert (tmp_path / "seed-0" / "assistant-0" / "metrics.jsonl").is_file()
    assert (tmp_path / "seed-0" / "distilled" / "metrics.jsonl").is_file()
    assert results["metric_label"] == "accuracy (dev)"
    distilled = find_row(results, "distilled")
    assert 0.3 < distilled["score"]["mean"] < 0.8  # 872 real dev sentences
    assert distilled["speedup"] > 1.0  # 1 of 4 layers
    assert find_row(results, "assistant", 0)["parameters"] > distilled["parameters"]
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "sst2"
    assert "accuracy (dev)" in (tmp_path / "report.md").read_text()


def test_conll_recipe_reports_entity_f1(tiny_folder, tmp_path):
    raw = _recipe(tiny_folder, "conll2003")
    raw["student"]["baseline"] = False
    results = run_recipe(validate_recipe(raw), raw, tmp_path, show_progress=False)
    assert results["metric_label"] == "entity F1 (test)"
    assert 0.0 <= find_row(results, "distilled")["score"]["mean"] <= 1.0
    record = json.loads((tmp_path / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "eval_f1" in record and "eval_precision" in record


def test_text_recipe_errors_name_the_key():
    raw = _recipe("minilm", "sst2")
    raw["student"]["model"] = {"kind": "mlp"}
    with pytest.raises(RecipeError, match=r"student\.model\.kind is 'mlp', which reads tensor, but dataset 'sst2'"):
        validate_recipe(raw)
    raw = _recipe("minilm", "sst2", chain=[1])
    with pytest.raises(RecipeError, match="must shrink step by step"):
        validate_recipe(raw)
    raw = _recipe("minilm", "sst2")
    raw["distill"]["matches"][0]["teacher"] = "attention"
    with pytest.raises(RecipeError, match="same on both sides"):
        validate_recipe(raw)


@pytest.mark.parametrize("name", ["sst2-minilm", "conll-minilm"])
def test_builtin_text_recipes_validate(name):
    recipe, _ = load_recipe(name)
    assert recipe.teacher.model.kind == "hf"
