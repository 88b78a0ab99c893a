"""VID, FT and SRRL: losses by hand, gradients where they belong, FT's paraphraser stage."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.core.method import BuildContext, StepContext
from distill.methods.ft import FactorTransferLoss, factor_distance
from distill.methods.srrl import SRRLLoss
from distill.methods.vid import VIDLoss


def _step(teacher_logits: torch.Tensor) -> StepContext:
    return StepContext(student_logits=teacher_logits, teacher_logits=teacher_logits)


def test_vid_is_the_gaussian_negative_log_likelihood():
    torch.manual_seed(0)
    vid = VIDLoss((3, 4, 5), (3, 6, 5), BuildContext(), init_pred_var=2.0).double()
    student, teacher = torch.randn(3, 4, 5, dtype=torch.float64), torch.randn(3, 6, 5, dtype=torch.float64)
    mean = vid.regressor(student).tolist()
    scale = vid.log_scale.tolist()
    total, count = 0.0, 0
    for b in range(3):
        for c in range(6):
            variance = math.log1p(math.exp(scale[c])) + 1e-5
            for position in range(5):
                error = mean[b][c][position] - teacher[b, c, position].item()
                total += 0.5 * (error**2 / variance + math.log(variance))
                count += 1
    assert vid(student, teacher, _step(torch.zeros(3, 2))).item() == pytest.approx(total / count, rel=1e-10)
    assert vid.variance().tolist() == pytest.approx([2.0] * 6, rel=1e-6)  # starts at init_pred_var


def _vid_by_hand(vid, student_map, teacher_map):
    """The NLL with the given (already pooled, by hand) maps: μ from the regressor on the student map."""
    mean = vid.regressor(student_map).tolist()
    variance = [math.log1p(math.exp(v)) + 1e-5 for v in vid.log_scale.tolist()]
    terms = [
        0.5 * ((mean[b][c][i] - teacher_map[b][c][i]) ** 2 / variance[c] + math.log(variance[c]))
        for b in range(len(mean))
        for c in range(len(mean[0]))
        for i in range(len(mean[0][0]))
    ]
    return sum(terms) / len(terms)


def test_vid_pools_the_larger_map_down_to_the_smaller_in_both_directions():
    torch.manual_seed(0)
    small, large = torch.randn(2, 3, 2, dtype=torch.float64), torch.randn(2, 4, 4, dtype=torch.float64)
    large_pooled = [[[(row[0] + row[1]) / 2, (row[2] + row[3]) / 2] for row in example] for example in large.tolist()]
    # a smaller student: the teacher is averaged over pairs of positions (RepDistiller), the student left alone
    vid = VIDLoss((2, 3, 2), (2, 4, 4), BuildContext()).double()
    assert vid(small, large, _step(torch.zeros(2, 2))).item() == pytest.approx(
        _vid_by_hand(vid, small, large_pooled), rel=1e-10
    )
    # a larger student: the student is pooled to the teacher's size
    vid = VIDLoss((2, 4, 4), (2, 3, 2), BuildContext()).double()
    pooled_student = torch.tensor(large_pooled, dtype=torch.float64)
    assert vid(large, small, _step(torch.zeros(2, 2))).item() == pytest.approx(
        _vid_by_hand(vid, pooled_student, small.tolist()), rel=1e-10
    )


def test_vid_regressor_has_no_bias_as_the_reference():
    vid = VIDLoss((2, 3, 5, 5), (2, 4, 5, 5), BuildContext())
    assert all(module.bias is None for module in vid.regressor if isinstance(module, torch.nn.Conv2d))


def test_vid_gradcheck_and_vectors():
    torch.manual_seed(0)
    vid = VIDLoss((2, 3), (2, 4), BuildContext()).double()
    student = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: vid(s, teacher, _step(teacher)), (student,))


def test_factor_distance_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    # rows normalised: s -> (0.6, 0.8), (1, 0); t -> (0, 1), (1/√2, 1/√2)
    r = 1 / math.sqrt(2)
    expected = (abs(0.6 - 0) + abs(0.8 - 1) + abs(1 - r) + abs(0 - r)) / 4
    assert factor_distance(s, t, reduction="paper").item() == pytest.approx(expected, rel=1e-12)


def test_factor_distance_channel_mean_square_is_repdistillers_by_hand():
    # (B=1, C=2, L=2) factors: the channel mean of F² is a length-2 map, then L2-normalised
    s = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]], dtype=torch.float64)  # mean of squares: (5, 2)
    t = torch.tensor([[[0.0, 1.0], [2.0, 1.0]]], dtype=torch.float64)  # (2, 1)
    ns, nt = math.hypot(5, 2), math.hypot(2, 1)
    expected = (abs(5 / ns - 2 / nt) + abs(2 / ns - 1 / nt)) / 2
    assert factor_distance(s, t).item() == pytest.approx(expected, rel=1e-12)
    # the whole-factor form of the paper is another number
    assert factor_distance(s, t, reduction="paper").item() != pytest.approx(expected, rel=1e-3)
    # a larger teacher factor is average-pooled to the student's length first
    wide = torch.tensor([[[0.0, 0.0, 2.0, 0.0], [4.0, 0.0, 2.0, 0.0]]], dtype=torch.float64)  # pools to t
    assert factor_distance(s, wide).item() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="unknown reduction 'sum'"):
        factor_distance(s, t, reduction="sum")


def test_ft_batch_norm_follows_repdistiller_and_is_an_option():
    def norms(module):
        return sum(isinstance(m, nn.BatchNorm1d) for m in module.modules())

    ft = FactorTransferLoss((4, 3, 6), (4, 8, 6), BuildContext())
    assert norms(ft.paraphraser_encoder) == norms(ft.paraphraser_decoder) == 0 and norms(ft.translator) == 3
    ft = FactorTransferLoss(
        (4, 3, 6), (4, 8, 6), BuildContext(), paraphraser_batch_norm=True, translator_batch_norm=False
    )
    assert norms(ft.paraphraser_encoder) == 3 and norms(ft.translator) == 0


def test_ft_pretraining_touches_only_the_paraphraser_then_freezes_it():
    torch.manual_seed(0)
    ft = FactorTransferLoss((4, 3, 6), (4, 8, 6), BuildContext())
    teacher = torch.randn(4, 8, 6)
    loss = ft.pretrain_loss(None, teacher, _step(torch.zeros(4, 2)))
    loss.backward()
    assert all(p.grad is not None for p in ft.paraphraser_encoder.parameters())
    assert all(p.grad is None for p in ft.translator.parameters())
    ft.end_pretrain()
    assert not any(p.requires_grad for p in ft.paraphraser_encoder.parameters())
    ft.zero_grad()
    student = torch.randn(4, 3, 6, requires_grad=True)
    ft(student, teacher, _step(torch.zeros(4, 2))).backward()
    assert student.grad is not None and all(p.grad is not None for p in ft.translator.parameters())


def test_srrl_uses_the_teachers_frozen_classifier():
    torch.manual_seed(0)
    teacher = nn.Sequential()
    teacher.add_module("flatten", nn.Flatten())
    teacher.add_module("head", nn.Linear(6, 3))
    for p in teacher.parameters():
        p.requires_grad_(False)
    srrl = SRRLLoss((4, 5), (4, 6), BuildContext(teacher=teacher), sr_weight=2.0).double()
    teacher.double()
    srrl.eval()  # BatchNorm with running statistics: the hand computation below is then exact
    student = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    teacher_features = torch.randn(4, 6, dtype=torch.float64)
    teacher_logits = torch.randn(4, 3, dtype=torch.float64)
    translated = srrl.connector(student).detach()
    feature_term = ((translated - teacher_features) ** 2).mean().item()
    weight, bias = teacher.head.weight.tolist(), teacher.head.bias.tolist()
    sr_total = 0.0
    for b in range(4):
        for k in range(3):
            predicted = bias[k] + sum(weight[k][j] * translated[b, j].item() for j in range(6))
            sr_total += (predicted - teacher_logits[b, k].item()) ** 2
    expected = feature_term + 2.0 * sr_total / 12
    loss = srrl(student, teacher_features, _step(teacher_logits))
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p is q for p in srrl.parameters() for q in teacher.parameters())
    assert "head" not in dict(srrl.named_modules())  # the teacher layer is not part of the student side


def test_srrl_names_a_missing_teacher_head():
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(6, 3))
    with pytest.raises(Exception, match="classifier"):
        SRRLLoss((4, 5), (4, 6), BuildContext(teacher=teacher), teacher_head="classifier")
