"""Hidden-state matches of causal LMs: names, the learned projection when widths differ, masks, by hand."""

from __future__ import annotations

import pytest
import torch

from distill.core.batch import Batch
from distill.lm.hidden import LMStudent, hidden_matches
from distill.lm.models import load_causal_lm
from distill.lm.objective import LMObjective
from distill.run.recipe import MatchSpec
from tests.lm_helpers import tiny_lm_folder


def _batch() -> Batch:
    ids = torch.tensor([[101, 1999, 1996, 2927, 2643, 102], [101, 2643, 2580, 1996, 6014, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    targets = torch.full_like(ids, -100)
    targets[0, 2:5] = ids[0, 3:6]  # a pair: its first two tokens are the prompt
    targets[1, :4] = ids[1, 1:5]  # padding at the end is never scored
    return Batch({"input_ids": ids, "attention_mask": mask}, targets)


def test_a_narrower_student_gets_a_projection_and_the_term_equals_the_hand_computation(tmp_path):
    teacher = load_causal_lm(tiny_lm_folder(tmp_path / "t", layers=3, hidden=32))
    student = load_causal_lm(tiny_lm_folder(tmp_path / "s", layers=2, hidden=16, seed=1))
    spec = MatchSpec(student="hidden:2", teacher="hidden:3", loss="hidden_mse", weight=0.5)
    objective = LMObjective(student, teacher, None, matches=[spec])
    assert isinstance(objective.trainable, LMStudent)
    projection = objective.trainable.projections[0]
    assert (projection.in_features, projection.out_features) == (16, 32)
    batch = _batch()
    terms = objective.losses(objective.trainable, batch)
    with torch.no_grad():
        s = student(**batch.inputs, output_hidden_states=True).hidden_states[2]
        t = teacher(**batch.inputs, output_hidden_states=True).hidden_states[3]
        scored = batch.labels != -100
        by_hand = ((projection(s) - t)[scored] ** 2).mean()
        ce = torch.nn.functional.cross_entropy(student(**batch.inputs).logits[scored], batch.labels[scored])
    assert terms["hidden0_hidden_mse"].item() == pytest.approx(0.5 * by_hand.item(), rel=1e-5)
    assert terms["total"].item() == pytest.approx(0.5 * by_hand.item(), rel=1e-5)  # hard_weight 0: no CE
    assert terms["hard_ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    terms["total"].backward()
    assert projection.weight.grad is not None and projection.weight.grad.abs().sum() > 0
    assert set(objective.parts(objective.trainable)) == {"model", "projections"}


def test_same_widths_need_no_projection_unless_asked(tmp_path):
    teacher = load_causal_lm(tiny_lm_folder(tmp_path / "t", layers=3))
    student = load_causal_lm(tiny_lm_folder(tmp_path / "s", layers=2, seed=1))
    plain = LMObjective(student, teacher, "forward_kl", matches=[MatchSpec(student="hidden:1", teacher="hidden:2")])
    assert isinstance(plain.trainable.projections[0], torch.nn.Identity)
    assert set(plain.parts(plain.trainable)) == {"model"}
    asked = MatchSpec(student="hidden:1", teacher="hidden:2", loss="cosine", connector="linear")
    assert isinstance(LMObjective(student, teacher, None, matches=[asked]).trainable.projections[0], torch.nn.Linear)


def test_bad_hidden_match_names_and_losses_are_one_sentence():
    with pytest.raises(ValueError, match=r"matches hidden states by name hidden:K \(K = 0 for the embeddings .. 4"):
        hidden_matches([MatchSpec(student="model.layers.1", teacher="hidden:2")], 4, 6)
    with pytest.raises(ValueError, match=r"the teacher has 6 layers \(hidden:0 .. hidden:6\)"):
        hidden_matches([MatchSpec(student="hidden:1", teacher="hidden:7")], 4, 6)
    with pytest.raises(ValueError, match="hidden states use one of hidden_mse, cosine"):
        hidden_matches([MatchSpec(student="hidden:1", teacher="hidden:2", loss="attention_kl")], 4, 6)
