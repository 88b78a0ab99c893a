"""SRRL: the official form (connector on the map, then pool) and the pooled_connector variant, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.core.distiller import Distiller, FeatureMatch
from distill.core.method import BuildContext, StepContext
from distill.methods.srrl import SRRLLoss
from distill.models import SmallCNN

EPS = 1e-5  # BatchNorm's default eps

# Student map (B=2, C_s=2, H=1, W=2) and teacher map (B=2, C_t=3, H=1, W=3): the sizes may differ.
STUDENT = [[[[1.0, -2.0]], [[0.5, 3.0]]], [[[-1.0, 0.0]], [[2.0, 1.0]]]]
TEACHER = [
    [[[1.0, 2.0, 3.0]], [[0.0, 0.0, 3.0]], [[-1.0, 1.0, 0.0]]],
    [[[2.0, 2.0, 2.0]], [[1.0, 0.0, 2.0]], [[0.0, 0.0, 3.0]]],
]
LOGITS = [[0.5, -1.0], [2.0, 0.0]]
CONNECTOR = [[1.0, 0.5], [-1.0, 1.0], [0.5, -0.5]]  # (C_t, C_s) weights of the 1×1 conv / Linear
BN_MEAN, BN_VAR = [0.1, -0.2, 0.0], [2.0, 0.5, 1.0]
BN_WEIGHT, BN_BIAS = [1.0, 2.0, 0.5], [0.0, 0.1, -0.1]
HEAD_W, HEAD_B = [[1.0, -1.0, 0.5], [0.0, 2.0, 1.0]], [0.2, -0.3]


def _teacher() -> nn.Module:
    teacher = nn.Sequential()
    teacher.add_module("pool", nn.AdaptiveAvgPool2d(1))
    teacher.add_module("flatten", nn.Flatten())
    teacher.add_module("head", nn.Linear(3, 2, dtype=torch.float64))
    with torch.no_grad():
        teacher.head.weight.copy_(torch.tensor(HEAD_W, dtype=torch.float64))
        teacher.head.bias.copy_(torch.tensor(HEAD_B, dtype=torch.float64))
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _srrl(form: str, student_shape=(2, 2, 1, 2), teacher_shape=(2, 3, 1, 3), **options) -> SRRLLoss:
    srrl = SRRLLoss(student_shape, teacher_shape, BuildContext(teacher=_teacher()), form=form, **options).double()
    layer, norm = srrl.connector[0], srrl.connector[1]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(CONNECTOR, dtype=torch.float64).view(layer.weight.shape))
        norm.running_mean.copy_(torch.tensor(BN_MEAN, dtype=torch.float64))
        norm.running_var.copy_(torch.tensor(BN_VAR, dtype=torch.float64))
        norm.weight.copy_(torch.tensor(BN_WEIGHT, dtype=torch.float64))
        norm.bias.copy_(torch.tensor(BN_BIAS, dtype=torch.float64))
    return srrl.eval()  # BatchNorm with the running statistics above: exact by hand


def _g(vector: list[float]) -> list[float]:
    """The connector by hand on one C_s vector: Linear, BatchNorm (running stats), ReLU."""
    out = []
    for c in range(3):
        z = sum(CONNECTOR[c][j] * vector[j] for j in range(2))
        z = (z - BN_MEAN[c]) / math.sqrt(BN_VAR[c] + EPS) * BN_WEIGHT[c] + BN_BIAS[c]
        out.append(max(z, 0.0))
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _loss_by_hand(translated: list[list[float]], fm_weight: float = 1.0, sr_weight: float = 1.0) -> float:
    teacher_means = [[_mean(TEACHER[b][c][0]) for c in range(3)] for b in range(2)]
    feature = _mean([(translated[b][c] - teacher_means[b][c]) ** 2 for b in range(2) for c in range(3)])
    logits = [[HEAD_B[k] + sum(HEAD_W[k][c] * translated[b][c] for c in range(3)) for k in range(2)] for b in range(2)]
    regression = _mean([(logits[b][k] - LOGITS[b][k]) ** 2 for b in range(2) for k in range(2)])
    return fm_weight * feature + sr_weight * regression


def _step() -> StepContext:
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    return StepContext(student_logits=logits, teacher_logits=logits)


def _official_by_hand() -> list[list[float]]:
    """Connector at every position of the student map, then the mean over positions."""
    translated = []
    for b in range(2):
        per_position = [_g([STUDENT[b][j][0][w] for j in range(2)]) for w in range(2)]
        translated.append([_mean([per_position[w][c] for w in range(2)]) for c in range(3)])
    return translated


def _pooled_by_hand() -> list[list[float]]:
    """The mean over positions first, then the connector on the pooled vector."""
    return [_g([_mean(STUDENT[b][j][0]) for j in range(2)]) for b in range(2)]


def test_official_form_connects_the_map_then_pools_both_maps():
    srrl = _srrl("official", sr_weight=2.0, fm_weight=0.5)
    student, teacher = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)
    expected = _loss_by_hand(_official_by_hand(), fm_weight=0.5, sr_weight=2.0)
    assert srrl(student, teacher, _step()).item() == pytest.approx(expected, rel=1e-12)
    assert isinstance(srrl.connector[0], nn.Conv2d) and srrl.connector[0].bias is None


def test_pooled_connector_pools_first_and_is_another_number_on_maps():
    srrl = _srrl("pooled_connector")
    student, teacher = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)
    expected = _loss_by_hand(_pooled_by_hand())
    assert srrl(student, teacher, _step()).item() == pytest.approx(expected, rel=1e-12)
    assert isinstance(srrl.connector[0], nn.Linear) and srrl.connector[0].bias is None
    # the ReLU does not commute with the mean: a negative pre-activation at one position only
    assert expected != pytest.approx(_loss_by_hand(_official_by_hand()), rel=1e-3)


def test_on_vectors_both_forms_are_the_same_computation():
    vectors = [[_mean(STUDENT[b][j][0]) for j in range(2)] for b in range(2)]
    teacher_vectors = [[_mean(TEACHER[b][c][0]) for c in range(3)] for b in range(2)]
    student, teacher = torch.tensor(vectors, dtype=torch.float64), torch.tensor(teacher_vectors, dtype=torch.float64)
    expected = _loss_by_hand(_pooled_by_hand())
    for form in ("official", "pooled_connector"):
        srrl = _srrl(form, student_shape=(2, 2), teacher_shape=(2, 3))
        assert srrl(student, teacher, _step()).item() == pytest.approx(expected, rel=1e-12), form


def test_sequence_maps_are_channels_first_and_sizes_may_differ():
    # (B, C, L): the 1-D analogue, W taken as L; the same numbers as the 2-D case
    srrl = _srrl("official", student_shape=(2, 2, 2), teacher_shape=(2, 3, 3))
    student = torch.tensor(STUDENT, dtype=torch.float64).squeeze(2)
    teacher = torch.tensor(TEACHER, dtype=torch.float64).squeeze(2)
    assert srrl(student, teacher, _step()).item() == pytest.approx(_loss_by_hand(_official_by_hand()), rel=1e-12)


@pytest.mark.parametrize("form", ["official", "pooled_connector"])
def test_gradcheck_through_the_connector_and_the_frozen_head(form):
    srrl = _srrl(form)
    srrl.train()  # batch statistics: also differentiable
    student = torch.tensor(STUDENT, dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor(TEACHER, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: srrl(s, teacher, _step()), (student,))
    srrl(student, teacher, _step()).backward()
    assert all(p.grad is None for p in srrl._teacher_head[0].parameters())
    assert "head" not in dict(srrl.named_modules())  # the teacher layer is not part of the student side


def test_the_connector_starts_as_the_official_initialisation():
    torch.manual_seed(0)
    srrl = SRRLLoss(
        (8, 64, 2, 2), (8, 256, 2, 2), BuildContext(teacher=nn.Sequential(nn.Linear(256, 3))), teacher_head="0"
    )
    weight = srrl.connector[0].weight
    assert weight.std().item() == pytest.approx(math.sqrt(2 / 256), rel=0.05)
    assert torch.equal(srrl.connector[1].weight, torch.ones(256)) and torch.equal(
        srrl.connector[1].bias, torch.zeros(256)
    )


def test_bad_options_and_shapes_are_named():
    context = BuildContext(teacher=_teacher())
    with pytest.raises(ValueError, match="form must be one of 'official', 'pooled_connector'; got 'pooled'"):
        SRRLLoss((2, 2, 1, 2), (2, 3, 1, 3), context, form="pooled")
    with pytest.raises(ValueError, match="differ in rank"):
        SRRLLoss((2, 2, 1, 2), (2, 3), context)
    with pytest.raises(ValueError, match="reads 3 features, but the matched teacher features have 4 channels"):
        SRRLLoss((2, 2, 1, 2), (2, 4, 1, 3), context)
    with pytest.raises(ValueError, match="needs the teacher"):
        SRRLLoss((2, 2), (2, 3), BuildContext())


def test_the_distiller_runs_the_official_form_on_final_maps():
    torch.manual_seed(0)
    teacher, student = SmallCNN((1, 8, 8), [8, 16], 10), SmallCNN((1, 8, 8), [4, 8], 10)
    inputs = torch.rand(4, 1, 8, 8)
    match = FeatureMatch("block2", "block2", "srrl", options={"teacher_head": "head"})
    distiller = Distiller(teacher, student, None, matches=[match], sample_inputs=inputs)
    method = distiller.trainable.methods["match0"]
    assert isinstance(method.connector[0], nn.Conv2d) and method.form == "official"
    with pytest.raises(ValueError, match="reads 16 features"):
        Distiller(teacher, student, None, matches=[FeatureMatch("block1", "block1", "srrl")], sample_inputs=inputs)
