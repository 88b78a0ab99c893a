"""Every strategy but BYOT runs from a text recipe (tiny saved BERT, real SST-2 rows), through one pipeline."""

from __future__ import annotations

import pytest

from distill.capture import layout_of
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from tests.hf_models import save_tiny_bert_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return save_tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


def _recipe(folder: str, **sections) -> dict:
    train = {"epochs": 1, "batch_size": 16, "optimizer": {"lr": 1e-3}}
    raw = {
        "name": "tiny-text",
        "seeds": [0],
        "data": {"dataset": "sst2", "train_subset": 32, "max_length": 24},
        "teacher": {"model": {"kind": "hf", "path": folder}, "train": train},
        "student": {"model": {"kind": "hf", "path": folder, "layers": 1, "layer_map": "skip"}, "train": train},
        "distill": {"temperature": 2.0, "hard_weight": 1.0},
    }
    for section, value in sections.items():
        raw[section] = {**raw.get(section, {}), **value}
    return raw


def _run(raw: dict, out) -> dict:
    results = run_recipe(validate_recipe(raw), raw, out, show_progress=False)
    assert results["metric_label"] == "accuracy (dev)" and results["format_version"] == 2
    for row in results["rows"]:
        assert 0.0 <= row["score"]["mean"] <= 1.0 and row["parameters"] > 0 and row["cpu_latency_ms"] > 0
    return results


def test_an_ensemble_of_two_bert_teachers_distils_into_one_student(folder, tmp_path):
    results = _run(_recipe(folder, teacher={"ensemble": {"members": 2}}), tmp_path)
    members = results["teacher"]["members"]
    assert [m["seeds"][0]["seed"] for m in members] == [0, 1]
    assert [row["role"] for row in results["rows"]] == ["baseline", "distilled", "distilled_single"]
    assert (tmp_path / "teacher" / "member-1" / "checkpoints" / "latest.json").is_file()


def test_two_bert_students_learn_mutually(folder, tmp_path):
    results = _run(_recipe(folder, strategy={"kind": "mutual"}), tmp_path)
    assert [(row["role"], row["index"]) for row in results["rows"]] == [
        ("peer_alone", 0),
        ("peer_alone", 1),
        ("peer_mutual", 0),
        ("peer_mutual", 1),
    ]
    assert "teacher" not in results
    assert (tmp_path / "seed-0" / "mutual" / "checkpoints" / "latest.json").is_file()


def test_born_again_bert_generations(folder, tmp_path):
    teacher = {"kind": "hf", "path": folder}
    raw = _recipe(folder, strategy={"kind": "born_again", "generations": 2}, student={"model": teacher})
    results = _run(raw, tmp_path)
    labels = [row["label"] for row in results["rows"]]
    assert labels == ["generation 1", "generation 2", "ensemble of generations 0-2"]
    assert find_row(results, "generation", 1)["parameters"] == results["teacher"]["parameters"]


def test_unlabelled_sentences_teach_the_student_and_hide_their_labels(folder, tmp_path):
    raw = _recipe(folder, transfer={"labels": False, "split": "unseen"}, distill={"hard_weight": 0.0})
    results = _run(raw, tmp_path)
    assert results["train_examples"] == 16  # the students' half of the 32 sentences
    assert find_row(results, "distilled")["speedup"] > 1.0


def test_theseus_replaces_the_teacher_layers_then_fine_tunes_the_successor(folder, tmp_path):
    curriculum = {"kind": "linear", "start": 0.5, "end": 1.0}  # the paper's p = min(1, k t + b)
    raw = _recipe(folder, strategy={"kind": "theseus", "replace_probability": curriculum})
    raw["student"]["model"]["layers"] = 2
    results = _run(raw, tmp_path)
    assert [row["role"] for row in results["rows"]] == ["baseline", "distilled"]
    assert (tmp_path / "seed-0" / "replacing" / "metrics.jsonl").is_file()
    assert find_row(results, "distilled")["parameters"] < results["teacher"]["parameters"]


def test_a_pretraining_stage_of_a_text_feature_match_is_kept(folder, tmp_path):
    match = {"student": "hidden", "teacher": "hidden", "layer_map": "skip", "loss": "hidden_mse"}
    raw = _recipe(folder, distill={"matches": [{**match, "stage": "pretrain", "pretrain_epochs": 1}]})
    raw["student"]["baseline"] = False
    _run(raw, tmp_path)
    assert (tmp_path / "seed-0" / "distilled" / "stage-pretrain" / "metrics.jsonl").is_file()


def test_self_distillation_says_it_needs_tensor_data(folder):
    with pytest.raises(RecipeError, match=r"self_distill needs student\.model\.kind mlp or cnn1d"):
        validate_recipe(_recipe(folder, strategy={"kind": "self_distill"}))


def test_a_student_built_from_the_teacher_has_the_asked_depth(folder):
    from distill.run.runner import make_context

    raw = _recipe(folder)
    context = make_context(validate_recipe(raw), raw, "unused")
    teacher = context.build(context.recipe.teacher.model, 0)
    assert layout_of(context.build_student(0, source=teacher)).num_layers == 1
