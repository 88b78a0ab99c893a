"""Every strategy runs from a recipe end to end (tiny settings on scikit-learn digits) and resumes."""

from __future__ import annotations

import json

from distill.run.recipe import load_recipe
from distill.run.runner import run_recipe
from tests.interrupt import killed_after_epoch

FAST = [
    "seeds=[0]",
    "teacher.model={kind: mlp, hidden: [64]}",
    "teacher.train.epochs=3",
    "student.train.epochs=3",
    "student.model={kind: mlp, hidden: [32]}",
]
CHANCE = 0.1


def _run(tmp_path, name: str, *overrides: str, resume: bool = False) -> dict:
    recipe, raw = load_recipe("digits-demo", [*FAST, *overrides])
    return run_recipe(recipe, raw, tmp_path / name, resume=resume, show_progress=False)


def _labels(results: dict) -> list[str]:
    return [row["label"] for row in results["rows"]]


def _accuracy(results: dict, label: str) -> float:
    return next(row for row in results["rows"] if row["label"] == label)["score"]["mean"]


def test_ensemble_teacher_recipe_reports_members_and_both_students(tmp_path):
    results = _run(tmp_path, "ensemble", "teacher.ensemble={members: 3}")
    members = results["teacher"]["members"]
    assert [m["seeds"][0]["seed"] for m in members] == [0, 1, 2] and [m["index"] for m in members] == [0, 1, 2]
    assert len({m["score"]["mean"] for m in members}) > 1  # different seeds, different teachers
    assert [row["role"] for row in results["rows"]] == ["baseline", "distilled", "distilled_single"]
    assert all(_accuracy(results, label) > 3 * CHANCE for label in _labels(results))
    assert (tmp_path / "ensemble" / "teacher" / "member-2" / "metrics.jsonl").exists()


def test_unlabeled_unseen_transfer_set_still_teaches_the_student(tmp_path):
    results = _run(tmp_path, "transfer", "transfer={labels: false, split: unseen}", "distill.hard_weight=0")
    assert results["train_examples"] == 1257 - round(0.5 * 1257)  # the student's half
    assert _accuracy(results, "student, distilled") > 3 * CHANCE  # learnt from soft targets alone


def test_mutual_learning_recipe_scores_every_peer_alone_and_together(tmp_path):
    results = _run(tmp_path, "dml", "strategy={kind: mutual, peers: 2}")
    assert _labels(results) == ["peer 0 alone", "peer 1 alone", "peer 0 mutual", "peer 1 mutual"]
    assert [(row["role"], row["index"]) for row in results["rows"]][:2] == [("peer_alone", 0), ("peer_alone", 1)]
    assert "teacher" not in results and all("speedup" not in row for row in results["rows"])
    assert all(_accuracy(results, label) > 3 * CHANCE for label in _labels(results))


def test_self_distillation_recipe_scores_every_exit(tmp_path):
    results = _run(tmp_path, "byot", "strategy={kind: self_distill}", "student.model={kind: mlp, hidden: [64, 32]}")
    assert _labels(results) == ["student, hard labels only", "exit 1/2", "exit 2/2"]
    assert all(_accuracy(results, label) > 2 * CHANCE for label in _labels(results))
    exits = [row for row in results["rows"] if row["role"] == "exit"]
    assert [row["index"] for row in exits] == [1, 2] and all(row["parameters"] > 0 for row in exits)


def test_chain_and_tree_students_run_from_recipes(tmp_path):
    chain = _run(tmp_path, "chain", "student.chain=[{kind: mlp, hidden: [48]}]")
    assert [row["role"] for row in chain["rows"]] == ["assistant", "baseline", "distilled"]
    assistant = chain["rows"][0]
    assert assistant["label"] == "assistant 0" and assistant["parameters"] > chain["rows"][1]["parameters"]
    tree = _run(
        tmp_path,
        "tree",
        "student.model={kind: tree, depth: 3}",
        "student.train.optimizer={name: adam, lr: 0.03}",
        "distill.temperature=2",
    )
    assert _accuracy(tree, "student, distilled") > 2 * CHANCE
    picture = tmp_path / "tree" / "seed-0" / "distilled" / "tree.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_born_again_resumes_after_an_interruption_with_the_same_results(tmp_path, monkeypatch):
    overrides = ["strategy={kind: born_again, generations: 2}", "student.model={kind: mlp, hidden: [64]}"]
    straight = _run(tmp_path, "straight", *overrides)
    assert _labels(straight) == ["generation 1", "generation 2", "ensemble of generations 0-2"]

    with killed_after_epoch(monkeypatch, 1, where=lambda run_dir: "generation-2" in run_dir):
        _run(tmp_path, "resumed", *overrides)
    resumed = _run(tmp_path, "resumed", *overrides, resume=True)
    for before, after in zip(straight["rows"], resumed["rows"], strict=True):  # latencies are measured anew
        assert [s["score"] for s in after["seeds"]] == [s["score"] for s in before["seeds"]], before["label"]
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["strategy"] == "born_again"
