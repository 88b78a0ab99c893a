"""Sequence-level KD and on-policy distillation of causal LMs: prompts, completions, the λ draw, end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.core.batch import Batch
from distill.lm.corpus import IGNORE
from distill.lm.generation import GenerationSpec, generate
from distill.lm.objective import LMObjective
from distill.lm.on_policy import OnPolicyObjective
from distill.lm.sequences import prompt_length, prompts_of, with_completions
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from distill.train.atomic import read_json
from tests.lm_helpers import minilm_tokenizer
from tests.test_lm_run import lm_recipe


def test_a_pair_prompts_with_its_unscored_prefix_and_a_block_with_its_first_tokens():
    # unshifted labels of a pair [-100, -100, -100, 5, 6, 7] give next-token targets [-100, -100, 5, 6, 7, -100]
    pair_targets = torch.tensor([IGNORE, IGNORE, 5, 6, 7, IGNORE])
    assert prompt_length(pair_targets, prompt_tokens=4) == 3
    block_targets = torch.tensor([11, 12, 13, 14, 15, IGNORE])  # a corpus block: everything scored
    assert prompt_length(block_targets, prompt_tokens=4) == 4
    ids = torch.tensor([[1, 2, 3, 5, 6, 7], [10, 11, 12, 13, 14, 15]])
    mask = torch.ones_like(ids)
    assert prompts_of(ids, torch.stack([pair_targets, block_targets]), mask, 4) == [[1, 2, 3], [10, 11, 12, 13]]


def test_completions_are_scored_and_an_ended_one_keeps_its_eos():
    blocks = with_completions([[1, 2], [3]], [[7, 8], [9]], ended=[True, False], pad_id=0, eos_id=99)
    assert blocks.input_ids.tolist() == [[1, 2, 7, 8, 99], [3, 9, 0, 0, 0]]
    assert blocks.labels.tolist() == [[IGNORE, IGNORE, 7, 8, 99], [IGNORE, 9, IGNORE, IGNORE, IGNORE]]
    assert blocks.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]


def _models(tmp_path: Path):
    from distill.lm.models import drop_layers, load_causal_lm
    from tests.lm_helpers import tiny_lm_folder

    teacher = load_causal_lm(tiny_lm_folder(tmp_path / "teacher", layers=3))
    return teacher, drop_layers(teacher, [0, 2])


def _batch(tokenizer) -> Batch:
    ids = tokenizer(["in the beginning god created the heaven and the earth"] * 2, return_tensors="pt")["input_ids"]
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = ids[:, 1:]
    return Batch({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, targets)


def test_lambda_zero_is_offline_and_lambda_one_trains_on_the_students_own_greedy_completions(tmp_path):
    teacher, student = _models(tmp_path)
    tokenizer = minilm_tokenizer()
    batch = _batch(tokenizer)
    offline = LMObjective(student, teacher, "jsd", options={"beta": 0.5}, hard_weight=0.5)
    settings = GenerationSpec(max_new_tokens=4, prompt_tokens=3)
    never = OnPolicyObjective(offline, 0.0, settings, tokenizer)
    assert torch.equal(never.losses(student, batch, step=3)["total"], offline.losses(student, batch, step=3)["total"])
    always = OnPolicyObjective(offline, 1.0, settings, tokenizer)
    own = always.student_batch(student, batch, step=0)
    prompts = [row[:3] for row in batch.inputs["input_ids"].tolist()]
    greedy = generate(student, prompts, tokenizer, settings)
    for row, (prompt, completion) in enumerate(zip(prompts, greedy.completions, strict=True)):
        written = own.inputs["input_ids"][row][own.inputs["attention_mask"][row].bool()].tolist()
        assert written[: len(prompt) + len(completion)] == prompt + completion
        assert (own.labels[row, : len(prompt) - 1] == IGNORE).all()  # the prompt is never scored
    terms = always.losses(student, batch, step=0)
    assert always.on_policy_batches == 1 and torch.equal(terms["total"], terms["jsd"])  # no CE on own text


def test_the_on_policy_draw_is_reproducible_and_has_rate_lambda():
    objective = OnPolicyObjective.__new__(OnPolicyObjective)
    objective.fraction, objective.seed = 0.3, 7
    draws = [objective.on_policy(step) for step in range(400)]
    assert draws == [objective.on_policy(step) for step in range(400)]
    assert 0.24 < sum(draws) / len(draws) < 0.36


def _small(tmp_path: Path, strategy: dict) -> dict:
    raw = lm_recipe(tmp_path)
    del raw["teacher"]["train"]
    raw["data"]["train_subset"] = 24
    raw["student"]["train"]["epochs"] = 1
    raw["strategy"] = strategy
    raw["generation"] = {"max_new_tokens": 6, "prompt_tokens": 8, "samples": 1}
    return raw


def test_seq_kd_trains_on_the_teachers_sequences_made_once(tmp_path):
    raw = _small(tmp_path, {"kind": "seq_kd"})
    raw["distill"] = {"response_loss": None, "hard_weight": 1.0}
    recipe = validate_recipe(raw, "seq-kd test")
    results = run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    assert {row["role"] for row in results["rows"]} == {"baseline", "distilled"}
    folder = tmp_path / "run" / "teacher-sequences"
    assert read_json(folder / "meta.json")["sequences"] == 24
    stamp = (folder / "sequences.safetensors").stat().st_mtime_ns
    run_recipe(recipe, raw, tmp_path / "run", resume=True, show_progress=False)
    assert (folder / "sequences.safetensors").stat().st_mtime_ns == stamp  # reused, not generated again


def test_on_policy_runs_end_to_end_and_lm_strategies_refuse_other_models(tmp_path):
    raw = _small(tmp_path, {"kind": "on_policy", "student_data_fraction": 0.5})
    raw["distill"] = {"response_loss": "jsd", "temperature": 1.0, "response_options": {"beta": 0.5}}
    results = run_recipe(validate_recipe(raw, "gkd test"), raw, tmp_path / "run", show_progress=False)
    assert {row["role"] for row in results["rows"]} == {"baseline", "distilled"}
    bad = {"strategy": {"kind": "on_policy"}}
    with pytest.raises(Exception, match="strategy on_policy distils causal language models"):
        validate_recipe(bad, "gkd test")


def test_stored_teacher_sequences_are_made_again_when_the_teacher_changes(tmp_path):
    from distill.lm.seq_kd import teacher_sequences

    teacher, _ = _models(tmp_path)
    tokenizer = minilm_tokenizer()
    prompts = [row[:3] for row in _batch(tokenizer).inputs["input_ids"].tolist()]
    settings = GenerationSpec(max_new_tokens=3, prompt_tokens=3)
    folder = tmp_path / "sequences"
    teacher_sequences(folder, teacher, tokenizer, prompts, settings)
    first = read_json(folder / "meta.json")["key"]
    teacher_sequences(folder, teacher, tokenizer, prompts, settings)
    assert read_json(folder / "meta.json")["key"] == first  # same teacher: reused
    with torch.no_grad():
        next(teacher.parameters()).view(-1)[0] += 1e-3  # one weight, a change no per-tensor sum need show
    teacher_sequences(folder, teacher, tokenizer, prompts, settings)
    assert read_json(folder / "meta.json")["key"] != first
