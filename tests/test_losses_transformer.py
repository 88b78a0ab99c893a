"""Transformer losses against hand-written references (plain-Python loops)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import attention_mse_loss, get
from distill.losses.transformer import (
    attention_ce_loss,
    attention_mse_tinybert_loss,
    mmd_loss,
    pkd_loss,
    value_relation_loss,
)
from tests.references import assert_padding_never_matters, softmax_row, valid_position

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])  # n_b = 3, 2
B, H, L = 2, 2, 3


def _probabilities() -> tuple[torch.Tensor, torch.Tensor]:
    """Row-stochastic attention whose padded keys have probability 0, like a real model's."""
    keys = MASK[:, None, None, :].bool()
    scores = [torch.randn(B, H, L, L, dtype=torch.float64).masked_fill(~keys, -math.inf) for _ in range(2)]
    return scores[0].softmax(-1), scores[1].softmax(-1)


def _scores() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, H, L, L, dtype=torch.float64), torch.randn(B, H, L, L, dtype=torch.float64)


def _values(d_student: int = 4, d_teacher: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, H, L, d_student, dtype=torch.float64), torch.randn(B, H, L, d_teacher, dtype=torch.float64)


# ----------------------------------------------------------------- references


def _ce_reference(student, teacher, mask=None) -> float:
    s, t = student.tolist(), teacher.tolist()
    total, rows = 0.0, 0
    for b in range(B):
        for h in range(H):
            for q in range(L):
                if not valid_position(mask, b, q):
                    continue
                rows += 1
                for k in range(L):
                    if valid_position(mask, b, k):
                        total -= t[b][h][q][k] * math.log(max(s[b][h][q][k], 1e-12))
    return total / rows


def _tinybert_reference(student, teacher, mask=None) -> float:
    s, t = student.tolist(), teacher.tolist()
    total = 0.0
    for b in range(B):
        for h in range(H):
            for q in range(L):
                for k in range(L):
                    s_value, t_value = s[b][h][q][k], t[b][h][q][k]
                    if mask is None:  # TinyBERT: scores <= -100 are masked, i.e. 0
                        s_value = 0.0 if s_value <= -100 else s_value
                        t_value = 0.0 if t_value <= -100 else t_value
                    elif not (mask[b, q] and mask[b, k]):
                        continue
                    total += (s_value - t_value) ** 2
    return total / (B * H * L * L)


def _pkd_reference(student, teacher) -> float:
    total = 0.0
    for s_row, t_row in zip(student[:, 0].tolist(), teacher[:, 0].tolist(), strict=True):
        s_norm, t_norm = math.sqrt(sum(x * x for x in s_row)), math.sqrt(sum(x * x for x in t_row))
        total += sum((s / s_norm - t / t_norm) ** 2 for s, t in zip(s_row, t_row, strict=True))
    return total / len(student)


def _gram(first, second) -> list[list[list[float]]]:
    """G[b][i][j] = Σ_d first[b][i][d] · second[b][j][d] / D, by loops."""
    a, c = first.tolist(), second.tolist()
    hidden = len(a[0][0])
    return [
        [[sum(x * y for x, y in zip(a[b][i], c[b][j], strict=True)) / hidden for j in range(L)] for i in range(L)]
        for b in range(B)
    ]


def _mmd_reference(student_states, teacher_states, mask=None) -> float:
    g_s, g_t = _gram(*student_states), _gram(*teacher_states)
    squares = [
        (g_s[b][i][j] - g_t[b][i][j]) ** 2
        for b in range(B)
        for i in range(L)
        for j in range(L)
        if valid_position(mask, b, i) and valid_position(mask, b, j)
    ]
    return sum(squares) / len(squares)


def _hidden(d_student: int = 4, d_teacher: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, L, d_student, dtype=torch.float64), torch.randn(B, L, d_teacher, dtype=torch.float64)


def _relation_row(values: list[list[float]], q: int, keys: list[int]) -> list[float]:
    scale = math.sqrt(len(values[q]))
    return softmax_row([sum(a * c for a, c in zip(values[q], values[k], strict=True)) / scale for k in keys])


def _vr_reference(student, teacher, mask=None) -> float:
    vs, vt = student.tolist(), teacher.tolist()
    total, rows = 0.0, 0
    for b in range(B):
        keys = [k for k in range(L) if valid_position(mask, b, k)]
        for h in range(H):
            for q in keys:
                p_s, p_t = _relation_row(vs[b][h], q, keys), _relation_row(vt[b][h], q, keys)
                total += sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
                rows += 1
    return total / rows


# ----------------------------------------------------------------- values


def test_registered_names() -> None:
    assert get("attention_ce") is attention_ce_loss
    assert get("attention_mse_tinybert") is attention_mse_tinybert_loss
    assert get("pkd") is pkd_loss
    assert get("value_relation") is value_relation_loss
    assert get("mmd") is mmd_loss


@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_ce_matches_reference(mask) -> None:
    student, teacher = _probabilities()
    got = attention_ce_loss(student, teacher, mask)
    assert got.item() == pytest.approx(_ce_reference(student, teacher, mask), rel=1e-10)


def test_attention_ce_by_hand() -> None:
    student = torch.tensor([[[[0.5, 0.5], [0.25, 0.75]]]])
    teacher = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])
    expected = (-math.log(0.5) - 0.5 * math.log(0.25) - 0.5 * math.log(0.75)) / 2
    assert attention_ce_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mask", [None, MASK])
def test_attention_mse_tinybert_matches_reference(mask) -> None:
    student, teacher = _scores()
    got = attention_mse_tinybert_loss(student, teacher, mask)
    assert got.item() == pytest.approx(_tinybert_reference(student, teacher, mask), rel=1e-10)


def test_tinybert_and_textbrewer_normalisations_differ_only_in_the_denominator() -> None:
    student, teacher = _scores()
    tinybert = attention_mse_tinybert_loss(student, teacher, MASK).item()
    textbrewer = attention_mse_loss(student, teacher, MASK).item()
    assert tinybert * (B * H * L * L) == pytest.approx(textbrewer * H * (3**2 + 2**2), rel=1e-10)


def test_attention_mse_tinybert_without_mask_zeroes_scores_below_minus_100() -> None:
    student = torch.tensor([[[[1.0, -10000.0], [-50.0, 2.0]]]])
    teacher = torch.tensor([[[[0.5, -math.inf], [-200.0, 2.5]]]])
    # -50 is a real score (TextBrewer's -1e-3 threshold would zero it); -10000, -inf and -200 become 0.
    expected = ((1 - 0.5) ** 2 + 0 + (-50 - 0) ** 2 + (2 - 2.5) ** 2) / 4
    assert attention_mse_tinybert_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_pkd_matches_reference_and_ignores_scale() -> None:
    student, teacher = torch.randn(B, L, 4, dtype=torch.float64), torch.randn(B, L, 4, dtype=torch.float64)
    got = pkd_loss(student, teacher, MASK)
    assert got.item() == pytest.approx(_pkd_reference(student, teacher), rel=1e-10)
    assert pkd_loss(student[:, 0], teacher[:, 0]).item() == pytest.approx(got.item(), rel=1e-12)
    assert pkd_loss(3 * student, 0.5 * teacher).item() == pytest.approx(got.item(), rel=1e-10)


def test_pkd_by_hand() -> None:
    student = torch.tensor([[[3.0, 4.0], [9.0, 9.0]]])  # [CLS] normalised: (0.6, 0.8)
    teacher = torch.tensor([[[0.0, 2.0], [1.0, 1.0]]])  # (0, 1)
    assert pkd_loss(student, teacher).item() == pytest.approx(0.6**2 + 0.2**2, rel=1e-6)


@pytest.mark.parametrize("mask", [None, MASK])
def test_mmd_matches_reference(mask) -> None:
    student, teacher = _hidden(4, 6)  # hidden sizes may differ: each Gram is divided by its own D
    assert mmd_loss(student, teacher, mask).item() == pytest.approx(
        _mmd_reference((student, student), (teacher, teacher), mask), rel=1e-10
    )
    assert mmd_loss([student], [teacher], mask).item() == pytest.approx(mmd_loss(student, teacher, mask).item())
    (s_a, t_a), (s_b, t_b) = _hidden(4, 6), _hidden(4, 6)  # TextBrewer's two-layer form
    got = mmd_loss([s_a, s_b], [t_a, t_b], mask)
    assert got.item() == pytest.approx(_mmd_reference((s_a, s_b), (t_a, t_b), mask), rel=1e-10)


def test_mmd_by_hand() -> None:
    # One example, L = 2, position 1 padded: only the pair (0, 0) counts. G_S = (1² + 2²) / 2, G_T = 3² / 1.
    student = torch.tensor([[[1.0, 2.0], [5.0, 7.0]]])
    teacher = torch.tensor([[[3.0], [4.0]]])
    assert mmd_loss(student, teacher, torch.tensor([[1, 0]])).item() == pytest.approx((2.5 - 9.0) ** 2)
    # No mask: G_S = [[2.5, 9.5], [9.5, 37]], G_T = [[9, 12], [12, 16]], mean of the four squared gaps.
    expected = ((2.5 - 9) ** 2 + 2 * (9.5 - 12) ** 2 + (37 - 16) ** 2) / 4
    assert mmd_loss(student, teacher).item() == pytest.approx(expected)


@pytest.mark.parametrize("mask", [None, MASK])
def test_value_relation_matches_reference(mask) -> None:
    student, teacher = _values(4, 5)  # head sizes may differ: each side is scaled by its own √d_head
    got = value_relation_loss(student, teacher, mask)
    assert got.item() == pytest.approx(_vr_reference(student, teacher, mask), rel=1e-10)


def test_value_relation_is_zero_for_identical_values() -> None:
    values, _ = _values()
    assert value_relation_loss(values, values.clone(), MASK).item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------- masking and gradients


CASES = {
    "attention_ce": (attention_ce_loss, _probabilities, "pairs"),
    "attention_mse_tinybert": (attention_mse_tinybert_loss, _scores, "pairs"),
    "pkd": (
        pkd_loss,
        lambda: (torch.randn(B, L, 4, dtype=torch.float64), torch.randn(B, L, 4, dtype=torch.float64)),
        "positions",
    ),
    "value_relation": (value_relation_loss, _values, "positions"),
    "mmd": (mmd_loss, _hidden, "positions"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("junk", [1e30, float("inf"), float("-inf"), float("nan")])
def test_padding_never_matters(name: str, junk: float) -> None:
    loss_fn, make, kind = CASES[name]
    student, teacher = make()
    valid = MASK.bool()
    if kind == "pairs":
        padded = ~(valid[:, None, :, None] & valid[:, None, None, :]).expand(B, H, L, L)
    else:
        padded = ~valid[:, None, :].expand(student.shape[:3]) if student.dim() == 4 else ~valid
    assert_padding_never_matters(loss_fn, student, teacher, MASK, padded, junk)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mask", [None, MASK])
def test_gradcheck(name: str, mask) -> None:
    loss_fn, make, _ = CASES[name]
    student, teacher = make()
    if name == "attention_ce":  # strictly positive, away from the 1e-12 clamp
        student, teacher = torch.rand_like(student) + 0.1, torch.rand_like(teacher) + 0.1
    student, teacher = student.requires_grad_(True), teacher.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, t: loss_fn(s, t, mask), (student, teacher))


@pytest.mark.parametrize("name", ["attention_ce", "attention_mse_tinybert", "value_relation", "mmd"])
def test_all_masked_is_zero_with_grad(name: str) -> None:
    loss_fn, make, _ = CASES[name]
    student, teacher = make()
    student.requires_grad_(True)
    loss = loss_fn(student, teacher, torch.zeros(B, L))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


# ----------------------------------------------------------------- errors


def test_attention_ce_rejects_scores() -> None:
    student, teacher = _scores()
    with pytest.raises(ValueError, match=r"attention_ce: attention has negative entries.*pre-softmax scores"):
        attention_ce_loss(student, teacher, MASK)


@pytest.mark.parametrize("loss_fn", [attention_ce_loss, attention_mse_tinybert_loss])
def test_attention_shape_errors(loss_fn) -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(2, 2, 4, 4\)"):
        loss_fn(torch.rand(2, 3, 4, 4), torch.rand(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        loss_fn(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.ones(2, 3))


def test_pkd_shape_errors() -> None:
    with pytest.raises(ValueError, match=r"pkd: student shape \(2, 3, 4\) != teacher shape \(2, 3, 8\)"):
        pkd_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"\(batch, length, hidden\) or \(batch, hidden\); got shape \(4,\)"):
        pkd_loss(torch.randn(4), torch.randn(4))
    with pytest.raises(ValueError, match=r"pkd: mask has shape \(2, 4\).*\(2, 3\)"):
        pkd_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4))


def test_value_relation_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, 2, 3, 4\).*\(2, 4, 3, 4\).*same number of attention heads"):
        value_relation_loss(torch.randn(2, 2, 3, 4), torch.randn(2, 4, 3, 4))
    with pytest.raises(ValueError, match=r"student values must be \(batch, heads, length, head_dim\); got shape"):
        value_relation_loss(torch.randn(2, 3, 4), torch.randn(2, 2, 3, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4\).*\(2, 3\)"):
        value_relation_loss(torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4), torch.ones(2, 4))


def test_mmd_errors() -> None:
    with pytest.raises(
        ValueError, match=r"mmd: student shape \(2, 3, 4\) and teacher shape \(2, 5, 4\).*\(batch, length\)"
    ):
        mmd_loss(torch.randn(2, 3, 4), torch.randn(2, 5, 4))
    with pytest.raises(
        ValueError, match=r"student hidden states must be \(batch, length, hidden\); got shape \(2, 4\)"
    ):
        mmd_loss(torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"the two teacher states have shapes \(2, 3, 4\) and \(2, 3, 5\)"):
        mmd_loss(torch.randn(2, 3, 4), [torch.randn(2, 3, 4), torch.randn(2, 3, 5)])
    with pytest.raises(ValueError, match="one hidden state or a list of two per model; got 3 for the student"):
        mmd_loss([torch.randn(2, 3, 4)] * 3, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"mmd: mask has shape \(2, 4\).*\(2, 3\)"):
        mmd_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.ones(2, 4))
