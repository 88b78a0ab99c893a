"""BERT-of-Theseus module replacement and teacher-assistant chains."""

from __future__ import annotations

import pytest
import torch

from distill.core.batch import Batch
from distill.models.hf import layout_of, student_from_teacher
from distill.strategies import run_chain
from distill.strategies.theseus import TheseusObjective
from tests.hf_models import tiny_bert, tiny_inputs


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def test_replacement_probability_one_runs_the_successor_and_zero_the_predecessor():
    teacher = tiny_bert(layers=4)
    objective = TheseusObjective(teacher, 2, replace_probability=1.0)
    model, inputs = objective.trainable, tiny_inputs()
    expected_successor = _logits(student_from_teacher(teacher, 2, "skip"), inputs)
    model.train()  # dropout is 0 in the tiny config, so train mode only switches on replacement
    for group in objective.groups:
        group.probability = 1.0
    assert torch.allclose(_logits(model, inputs), expected_successor, atol=1e-6)
    for group in objective.groups:
        group.probability = 0.0
    assert torch.allclose(_logits(model, inputs), _logits(teacher, inputs), atol=1e-6)
    model.eval()  # evaluation always measures the successor
    assert torch.allclose(_logits(model, inputs), expected_successor, atol=1e-6)


def test_only_successor_layers_learn_and_the_successor_comes_out_whole():
    teacher = tiny_bert(layers=4)
    objective = TheseusObjective(teacher, 2, replace_probability={"kind": "linear", "start": 0.5, "end": 1.0})
    model = objective.trainable
    model.train()
    terms = objective.losses(model, Batch(tiny_inputs(), torch.tensor([0, 1, 2])), step=5, total_steps=10)
    assert terms["replace_probability"].item() == pytest.approx(0.75)
    terms["total"].backward()
    named = dict(model.named_parameters())
    assert all(p.grad is None for n, p in named.items() if ".predecessors." in n or "embeddings" in n)
    assert any(p.grad is not None for n, p in named.items() if ".successor." in n)
    with torch.no_grad():
        for group in objective.groups:
            group.successor.output.dense.bias.add_(0.5)  # pretend training changed it
    successor = objective.successor().eval()
    assert layout_of(successor).num_layers == 2
    model.eval()
    assert torch.allclose(_logits(successor, tiny_inputs()), _logits(model, tiny_inputs()), atol=1e-6)
    assert all(p.requires_grad for p in successor.parameters())


def test_theseus_needs_equal_groups():
    with pytest.raises(ValueError, match="do not divide"):
        TheseusObjective(tiny_bert(layers=4), 3)


def test_chain_distils_each_step_from_the_previous_result():
    calls = []

    def build(previous, size):
        return {"size": size, "from": previous["size"]}

    def distil(previous, student, index):
        calls.append((previous["size"], student["size"], index))
        return f"trained {student['size']}"

    steps = run_chain({"size": 6}, [4, 3, 2], build, distil)
    assert calls == [(6, 4, 0), (4, 3, 1), (3, 2, 2)]
    assert [s.model["from"] for s in steps] == [6, 4, 3]
    assert steps[-1].result == "trained 2"
    with pytest.raises(ValueError, match="at least one"):
        run_chain({"size": 6}, [], build, distil)
