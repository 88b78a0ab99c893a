"""Attention losses against hand-written references (explicit loops over batch, heads, queries, keys)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import attention_kl_loss, attention_mse_loss
from tests.references import assert_padding_never_matters

MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # n_b = 3, 2
B, H, L = 2, 3, 4


def _scores() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, H, L, L, dtype=torch.float64), torch.randn(B, H, L, L, dtype=torch.float64)


def _probabilities(mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-stochastic attention; with a mask, padded keys get probability 0 like a real model's."""
    student, teacher = _scores()
    if mask is not None:
        keys = mask[:, None, None, :].bool()
        student, teacher = student.masked_fill(~keys, -math.inf), teacher.masked_fill(~keys, -math.inf)
    return student.softmax(-1), teacher.softmax(-1)


def _mse_reference(student, teacher, mask=None) -> float:
    s, t = student.tolist(), teacher.tolist()
    total = 0.0
    for b in range(B):
        for h in range(H):
            for q in range(L):
                for k in range(L):
                    s_value, t_value = s[b][h][q][k], t[b][h][q][k]
                    if mask is None:  # TextBrewer: scores <= -1e-3 count as masked, i.e. 0
                        s_value = 0.0 if s_value <= -1e-3 else s_value
                        t_value = 0.0 if t_value <= -1e-3 else t_value
                    elif not (mask[b, q] and mask[b, k]):
                        continue
                    total += (s_value - t_value) ** 2
    if mask is None:
        return total / (B * H * L * L)
    return total / (H * sum(int(mask[b].sum()) ** 2 for b in range(B)))


def _kl_reference(student, teacher, mask=None) -> float:
    s, t = student.tolist(), teacher.tolist()
    total, rows = 0.0, 0
    for b in range(B):
        for h in range(H):
            for q in range(L):
                if mask is not None and not mask[b, q]:
                    continue
                rows += 1
                for k in range(L):
                    if (mask is None or mask[b, k]) and t[b][h][q][k] > 0:
                        total += t[b][h][q][k] * (math.log(t[b][h][q][k]) - math.log(max(s[b][h][q][k], 1e-12)))
    return total / rows


# ----------------------------------------------------------------- values


@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_mse_matches_reference(mask) -> None:
    student, teacher = _scores()
    got = attention_mse_loss(student, teacher, mask)
    assert got.item() == pytest.approx(_mse_reference(student, teacher, mask), rel=1e-10)


def test_attention_mse_without_mask_zeroes_masked_scores() -> None:
    student = torch.tensor([[[[1.0, -math.inf], [-1e-4, 2.0]]]])
    teacher = torch.tensor([[[[0.5, -10000.0], [-5.0, 2.5]]]])
    # After zeroing entries <= -1e-3: student [[1, 0], [-1e-4, 2]], teacher [[0.5, 0], [0, 2.5]].
    expected = ((1 - 0.5) ** 2 + 0 + (-1e-4) ** 2 + (2 - 2.5) ** 2) / 4
    assert attention_mse_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_kl_matches_reference(mask) -> None:
    student, teacher = _probabilities(mask)
    got = attention_kl_loss(student, teacher, mask)
    assert got.item() == pytest.approx(_kl_reference(student, teacher, mask), rel=1e-10)


def test_attention_kl_by_hand() -> None:
    student = torch.tensor([[[[0.5, 0.5], [0.25, 0.75]]]])
    teacher = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    row_0 = 1.0 * math.log(1.0 / 0.5)
    row_1 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_kl_loss(student, teacher).item() == pytest.approx((row_0 + row_1) / 2, rel=1e-6)


def test_attention_kl_is_zero_for_identical_attention() -> None:
    attention, _ = _probabilities(MASK)
    assert attention_kl_loss(attention, attention.clone(), MASK).item() == pytest.approx(0.0, abs=1e-12)
    assert attention_kl_loss(attention, attention.clone()).item() == pytest.approx(0.0, abs=1e-12)


def test_attention_kl_clamps_zero_student_probabilities() -> None:
    student = torch.tensor([[[[1.0, 0.0]]]])
    teacher = torch.tensor([[[[0.5, 0.5]]]])
    expected = 0.5 * math.log(0.5 / 1.0) + 0.5 * math.log(0.5 / 1e-12)
    assert attention_kl_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------- masking and gradients

LOSSES = {"attention_mse": (attention_mse_loss, _scores), "attention_kl": (attention_kl_loss, _probabilities)}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("junk", [1e30, float("inf"), float("-inf"), float("nan")])
def test_padded_pairs_never_matter(name: str, junk: float) -> None:
    loss_fn, make = LOSSES[name]
    student, teacher = make()
    valid = MASK.bool()
    padded = ~(valid[:, None, :, None] & valid[:, None, None, :]).expand(B, H, L, L)
    assert_padding_never_matters(loss_fn, student, teacher, MASK, padded, junk)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("mask", [None, MASK])
def test_gradcheck(name: str, mask) -> None:
    loss_fn, _ = LOSSES[name]
    # Strictly positive inputs away from the -1e-3 threshold and the 1e-12 clamp, so that finite
    # differences do not cross a kink.
    student = (torch.rand(B, H, L, L, dtype=torch.float64) + 0.1).requires_grad_(True)
    teacher = (torch.rand(B, H, L, L, dtype=torch.float64) + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, t: loss_fn(s, t, mask), (student, teacher))


def test_gradcheck_attention_kl_through_softmax() -> None:
    scores = torch.randn(B, H, L, L, dtype=torch.float64, requires_grad=True)
    _, teacher = _probabilities(MASK)
    assert torch.autograd.gradcheck(lambda x: attention_kl_loss(x.softmax(-1), teacher, MASK), (scores,))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_masked_is_zero_with_grad(name: str) -> None:
    loss_fn, make = LOSSES[name]
    student, teacher = make()
    student.requires_grad_(True)
    loss = loss_fn(student, teacher, torch.zeros(B, L))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_errors_name_the_shapes(name: str) -> None:
    loss_fn, _ = LOSSES[name]
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 2, 4, 4\)"):
        loss_fn(torch.rand(2, 3, 4, 4), torch.rand(2, 2, 4, 4), None)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        loss_fn(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"\(batch, heads, length, length\); got shape \(2, 4, 4\)"):
        loss_fn(torch.rand(2, 4, 4), torch.rand(2, 4, 4), None)
    with pytest.raises(ValueError, match=r"square.*\(2, 3, 4, 5\)"):
        loss_fn(torch.rand(2, 3, 4, 5), torch.rand(2, 3, 4, 5), torch.ones(2, 4))


def test_attention_kl_rejects_scores() -> None:
    student, teacher = _scores()
    with pytest.raises(ValueError, match="pre-softmax scores"):
        attention_kl_loss(student, teacher)
