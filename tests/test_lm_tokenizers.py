"""Teacher and student with different tokenizers: refused for same-vocabulary losses, ULD when asked (issue 17)."""

from __future__ import annotations

import math

import pytest

from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from distill.tasks.lm import word_chunks
from tests.lm_helpers import own_tokenizer_folder
from tests.test_lm_run import lm_recipe


def _two_tokenizers(tmp_path, loss: str) -> dict:
    raw = lm_recipe(tmp_path)
    del raw["teacher"]["train"]
    raw["student"]["model"] = {"kind": "causal_lm", "path": str(own_tokenizer_folder(tmp_path / "student"))}
    raw["student"]["train"]["epochs"] = 1
    raw["distill"]["response_loss"] = loss
    raw["generation"] = {"samples": 1, "max_new_tokens": 4}
    return raw


def test_another_vocabulary_with_a_same_vocabulary_loss_is_refused_before_training(tmp_path):
    raw = _two_tokenizers(tmp_path, "forward_kl")
    with pytest.raises(ValueError, match=r"is not the teacher's .* token-level losses compare one vocabulary; use"):
        run_recipe(validate_recipe(raw, "two tokenizers"), raw, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "seed-0").exists()


def test_uld_distils_across_tokenizers_each_model_reading_its_own_tokens(tmp_path):
    raw = _two_tokenizers(tmp_path, "uld")
    results = run_recipe(validate_recipe(raw, "two tokenizers"), raw, tmp_path / "run", show_progress=False)
    rows = {row["role"]: row for row in results["rows"]}
    assert set(rows) == {"baseline", "distilled"}
    # each model reads its own tokens: both decode their prompt to words of the test text (the teacher reading
    # the student's ids would decode them as its unused tokens)
    test_words = set((tmp_path / "corpus" / "test.txt").read_text().lower().split())
    teacher = results["teacher"]["details"]
    for details in (teacher, rows["distilled"]["details"]):
        prompt = details["generations"][0]["prompt"].replace(" ' ", "'").split()
        assert prompt and sum(word in test_words for word in prompt) >= len(prompt) - 2, prompt
        assert math.isfinite(details["test_perplexity"])
    assert "teacher_kl" not in rows["distilled"]["details"]  # a KL needs one vocabulary
    assert results["tokenizer"].endswith("student")  # the export carries the student's own tokenizer


def test_a_corpus_is_cut_into_word_pieces_for_two_tokenizers():
    assert word_chunks(["a b c d e", "f"], 2) == ["a b", "c d", "e", "f"]
