"""Distiller: gradients reach the student and connectors, never the teacher; terms add up; errors are early."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.capture import UnknownModuleError
from distill.core.batch import Batch
from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.core.schedules import Schedule
from distill.models import MLP
from distill.train.checkpoint import load_module_weights, write_checkpoint

INPUT_SHAPE = (1, 8, 8)


def _pair():
    teacher = MLP(INPUT_SHAPE, [32, 24], 10, dropout=0.5)
    student = MLP(INPUT_SHAPE, [12], 10)
    return teacher, student


def _batch(size: int = 6) -> Batch:
    return Batch(torch.rand(size, *INPUT_SHAPE), torch.randint(0, 10, (size,)))


def test_gradients_reach_student_and_connector_never_teacher():
    teacher, student = _pair()
    match = FeatureMatch("relu1", "relu2", loss="hidden_mse", connector="linear")
    batch = _batch()
    distiller = Distiller(teacher, student, "kd", 4.0, hard_weight=0.5, matches=[match], sample_inputs=batch.inputs)
    model = distiller.trainable
    model.train()
    assert not teacher.training  # train() on the trainable module leaves the teacher in eval mode
    terms = distiller.losses(model, batch)
    terms["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connectors.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not any(p is q for p in model.parameters() for q in teacher.parameters())


def test_teacher_dropout_stays_off_even_if_someone_switches_it_on():
    teacher, student = _pair()
    distiller = Distiller(teacher, student, "kd")
    teacher.train()
    inputs = torch.rand(4, *INPUT_SHAPE)
    first, _ = distiller.teacher_outputs(inputs)
    second, _ = distiller.teacher_outputs(inputs)
    assert torch.equal(first, second) and not teacher.training


def test_total_is_the_weighted_sum_of_the_named_terms():
    teacher, student = _pair()
    batch = _batch()
    matches = [FeatureMatch("relu1", "relu1", loss="cosine", weight=2.0, connector="mlp", name="cos1")]
    distiller = Distiller(
        teacher,
        student,
        "kd",
        temperature=3.0,
        kd_weight=0.5,
        hard_weight=0.25,
        matches=matches,
        sample_inputs=batch.inputs,
    )
    terms = distiller.losses(distiller.trainable, batch)
    assert set(terms) == {"kd", "hard_ce", "cos1", "total"}
    expected = 0.5 * terms["kd"] + 0.25 * terms["hard_ce"] + 2.0 * terms["cos1"]
    assert torch.allclose(terms["total"], expected)
    # the KD term is Hinton's T²-scaled KL at T=3, computed here from the two models' logits
    with torch.no_grad():
        t = torch.softmax(teacher(batch.inputs) / 3, dim=1)
        log_s = torch.log_softmax(student(batch.inputs) / 3, dim=1)
        reference = 9 * (t * (t.log() - log_s)).sum(dim=1).mean()
    assert math.isclose(float(terms["kd"].detach()), float(reference), rel_tol=1e-5)


def test_scheduled_weights_and_temperature_follow_the_step():
    teacher, student = _pair()
    batch = _batch()
    distiller = Distiller(
        teacher,
        student,
        "kd",
        temperature=Schedule(kind="linear", start=8.0, end=2.0),
        kd_weight=Schedule(kind="linear", start=0.0, end=1.0),
        hard_weight=1.0,
    )
    at_start = distiller.losses(distiller.trainable, batch, step=0, total_steps=10)
    assert "kd" not in at_start  # weight 0: the term is not even computed
    halfway = distiller.losses(distiller.trainable, batch, step=5, total_steps=10)
    assert torch.allclose(halfway["total"], 0.5 * halfway["kd"] + halfway["hard_ce"])


def test_unknown_layer_lists_valid_names_before_training():
    teacher, student = _pair()
    with pytest.raises(UnknownModuleError, match=r"did you mean 'fc2'") as error:
        Distiller(teacher, student, matches=[FeatureMatch("fc1", "fc_2")], sample_inputs=_batch().inputs)
    assert "relu1" in str(error.value)


def test_shape_mismatch_without_connector_names_the_match_and_both_shapes():
    teacher, student = _pair()
    with pytest.raises(ValueError, match=r"hidden_mse:relu1->relu1.*\(2, 12\).*\(2, 32\)|\(2, 32\).*\(2, 12\)"):
        Distiller(teacher, student, matches=[FeatureMatch("relu1", "relu1")], sample_inputs=_batch(2).inputs)
    with pytest.raises(ValueError, match="sample_inputs"):
        Distiller(teacher, student, matches=[FeatureMatch("relu1", "relu1", connector="linear")])


def test_parts_save_the_bare_student_and_the_connectors(tmp_path):
    teacher, student = _pair()
    batch = _batch()
    distiller = Distiller(
        teacher, student, matches=[FeatureMatch("fc1", "fc1", connector="linear")], sample_inputs=batch.inputs
    )
    parts = distiller.parts(distiller.trainable)
    assert set(parts) == {"model", "connectors"} and parts["model"] is student
    folder = write_checkpoint(tmp_path, 0, parts, torch.optim.SGD(student.parameters(), lr=1).state_dict(), {})
    bare = MLP(INPUT_SHAPE, [12], 10)
    load_module_weights(bare, folder)
    assert torch.equal(bare(batch.inputs), student(batch.inputs))


class TokenTagger(nn.Module):
    """A tiny Hugging Face-style model: keyword inputs, (batch, length, classes) logits."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, width)
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, input_ids, attention_mask):
        return self.head(torch.tanh(self.mix(self.embed(input_ids))))


def test_padding_never_changes_a_sequence_distillation_loss():
    teacher, student = TokenTagger(16), TokenTagger(8)
    ids = torch.randint(0, 20, (3, 5))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    labels = torch.where(mask.bool(), torch.randint(0, 3, (3, 5)), torch.tensor(-100))
    batch = Batch({"input_ids": ids, "attention_mask": mask}, labels)
    matches = [FeatureMatch("mix", "mix", loss="hidden_mse", connector="linear")]
    distiller = Distiller(teacher, student, "kd", 2.0, hard_weight=1.0, matches=matches, sample_inputs=batch.inputs)
    reference = distiller.losses(distiller.trainable, batch)
    other_ids = torch.where(mask.bool(), ids, torch.randint(0, 20, ids.shape))
    assert not torch.equal(other_ids, ids)
    perturbed = distiller.losses(distiller.trainable, Batch({"input_ids": other_ids, "attention_mask": mask}, labels))
    for name, value in reference.items():
        assert torch.allclose(value, perturbed[name]), name


def test_supervised_objective_is_cross_entropy():
    model = MLP(INPUT_SHAPE, [8], 10)
    batch = _batch()
    terms = SupervisedObjective(model).losses(model, batch)
    assert torch.allclose(terms["total"], nn.functional.cross_entropy(model(batch.inputs), batch.labels))
