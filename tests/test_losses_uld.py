"""ULD between vocabularies of different sizes, against a hand computation (issue 17, item 6)."""

from __future__ import annotations

import math

import pytest
import torch

from distill import losses
from distill.losses.uld import uld_loss


def _softmax(row):
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_uld_pairs_the_nth_scored_positions_and_compares_sorted_padded_probabilities():
    student = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])  # vocabulary 3
    teacher = torch.tensor([[[9.0, 9.0, 9.0, 9.0], [2.0, 0.0, 1.0, -1.0], [0.0, 0.0, 3.0, 1.0]]])  # vocabulary 4
    student_mask = torch.tensor([[True, True, False]])  # two scored student positions
    teacher_mask = torch.tensor([[False, True, True]])  # the teacher's text starts one token later
    expected = []
    for s_row, t_row in ((student[0, 0], teacher[0, 1]), (student[0, 1], teacher[0, 2])):
        p_s = [*sorted(_softmax(s_row.tolist()), reverse=True), 0.0]
        p_t = sorted(_softmax(t_row.tolist()), reverse=True)
        expected.append(sum(abs(a - b) for a, b in zip(p_s, p_t, strict=True)))
    value = uld_loss(student, teacher, student_mask=student_mask, teacher_mask=teacher_mask)
    assert value.item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_uld_drops_the_longer_sides_extra_positions_and_is_zero_for_identical_models():
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    assert uld_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    # a permuted vocabulary is the same sorted distribution: ULD cannot tell, by design
    assert uld_loss(logits, logits[..., torch.randperm(6)]).item() == pytest.approx(0.0, abs=1e-6)
    short = torch.tensor([[True, True, False, False], [True, False, False, False]])
    manual = uld_loss(logits[:, :2], logits[:, :2] * 2, student_mask=short[:, :2], teacher_mask=short[:, :2])
    assert uld_loss(logits, logits * 2, student_mask=short, teacher_mask=torch.ones(2, 4)).item() == pytest.approx(
        manual.item(), rel=1e-6
    )


def test_uld_gradcheck_and_registration():
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(2, 4, 6, dtype=torch.float64, generator=generator)
    mask = torch.tensor([[True, True, True, False], [False, True, True, True]])
    assert torch.autograd.gradcheck(lambda s: uld_loss(s, teacher, temperature=1.5, teacher_mask=mask), (student,))
    assert losses.get("uld") is uld_loss
    with pytest.raises(ValueError, match="temperature must be above 0"):
        uld_loss(student, teacher, temperature=0)
