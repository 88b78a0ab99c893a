"""Response losses against hand-written references (plain-Python math, no torch functional path)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.core.matches import accepted_options, check_options
from distill.losses import hard_ce_loss, kd_loss, logits_mse_loss, soft_ce_loss
from tests.references import assert_padding_never_matters

# ----------------------------------------------------------------- independent references (pure Python)


def _softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    top = max(z / temperature for z in row)
    exps = [math.exp(z / temperature - top) for z in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kd_row(student: list[float], teacher: list[float], temperature: float) -> float:
    p_s, p_t = _softmax(student, temperature), _softmax(teacher, temperature)
    return temperature**2 * sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s, strict=True))


def _soft_ce_row(student: list[float], teacher: list[float], temperature: float) -> float:
    p_s, p_t = _softmax(student, temperature), _softmax(teacher, temperature)
    return -sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s, strict=True))


def _rows(logits: torch.Tensor, mask: torch.Tensor | None) -> list[tuple[tuple[int, ...], list[float]]]:
    """(position index, logits row) for every valid position, by explicit loops."""
    values, rows = logits.tolist(), []
    if logits.dim() == 2:
        for b in range(len(values)):
            if mask is None or mask[b]:
                rows.append(((b,), values[b]))
    else:
        for b in range(len(values)):
            for pos in range(len(values[b])):
                if mask is None or mask[b, pos]:
                    rows.append(((b, pos), values[b][pos]))
    return rows


def _reference(row_loss, student, teacher, mask=None, temperature=1.0) -> float:
    losses = []
    for (index, s_row), (_, t_row) in zip(_rows(student, mask), _rows(teacher, mask), strict=True):
        t = temperature if isinstance(temperature, float) else float(temperature[index[: temperature.dim()]])
        losses.append(row_loss(s_row, t_row, t))
    return sum(losses) / len(losses)


MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])


def _pair(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape, dtype=torch.float64) * 2, torch.randn(*shape, dtype=torch.float64) * 2


# ----------------------------------------------------------------- values


def test_kd_on_a_2x3_example_by_hand() -> None:
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    temperature = 2.0
    expected = 0.0
    for s_row, t_row in zip(student, teacher, strict=True):
        e_s = [math.exp(z / temperature) for z in s_row]
        e_t = [math.exp(z / temperature) for z in t_row]
        p_s = [e / sum(e_s) for e in e_s]
        p_t = [e / sum(e_t) for e in e_t]
        expected += temperature**2 * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True)) / 2
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_and_soft_ce_3d_with_mask_match_reference(temperature: float) -> None:
    student, teacher = _pair(2, 4, 5)
    kd = kd_loss(student, teacher, temperature, mask=MASK)
    assert kd.item() == pytest.approx(_reference(_kd_row, student, teacher, MASK, temperature), rel=1e-10)
    ce = soft_ce_loss(student, teacher, temperature, mask=MASK)
    assert ce.item() == pytest.approx(_reference(_soft_ce_row, student, teacher, MASK, temperature), rel=1e-10)


def test_soft_ce_2d_has_no_t_squared() -> None:
    student, teacher = _pair(3, 4)
    got = soft_ce_loss(student, teacher, temperature=3.0)
    assert got.item() == pytest.approx(_reference(_soft_ce_row, student, teacher, None, 3.0), rel=1e-10)


def test_logits_mse_matches_reference() -> None:
    student, teacher = _pair(2, 4, 3)
    squares = [
        (s - t) ** 2
        for (_, s_row), (_, t_row) in zip(_rows(student, MASK), _rows(teacher, MASK), strict=True)
        for s, t in zip(s_row, t_row, strict=True)
    ]
    got = logits_mse_loss(student, teacher, mask=MASK)
    assert got.item() == pytest.approx(sum(squares) / len(squares), rel=1e-10)
    flat = [(s - t) ** 2 for s, t in zip(student.flatten().tolist(), teacher.flatten().tolist(), strict=True)]
    assert logits_mse_loss(student, teacher).item() == pytest.approx(sum(flat) / len(flat), rel=1e-10)


def test_logits_mse_with_temperature_by_hand() -> None:
    # TextBrewer kd_mse_loss: F.mse_loss(z_S / T, z_T / T).
    student, teacher = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    expected = sum(
        (s / 2.5 - t / 2.5) ** 2
        for s_row, t_row in zip(student, teacher, strict=True)
        for s, t in zip(s_row, t_row, strict=True)
    )
    got = logits_mse_loss(torch.tensor(student), torch.tensor(teacher), temperature=2.5)
    assert got.item() == pytest.approx(expected / 6, rel=1e-6)
    assert logits_mse_loss(torch.tensor(student), torch.tensor(teacher)).item() == pytest.approx(expected * 2.5**2 / 6)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_logits_mse_with_temperature_and_mask_matches_reference(temperature: float) -> None:
    student, teacher = _pair(2, 4, 3)
    squares = [
        (s / temperature - t / temperature) ** 2
        for (_, s_row), (_, t_row) in zip(_rows(student, MASK), _rows(teacher, MASK), strict=True)
        for s, t in zip(s_row, t_row, strict=True)
    ]
    got = logits_mse_loss(student, teacher, temperature, mask=MASK)
    assert got.item() == pytest.approx(sum(squares) / len(squares), rel=1e-10)


def test_kd_is_zero_for_identical_logits() -> None:
    logits = torch.randn(3, 4, 6)
    assert kd_loss(logits, logits.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss_fn", [kd_loss, soft_ce_loss])
def test_classes_masked_to_minus_inf_in_both_models_are_ignored(loss_fn) -> None:
    student, teacher = torch.randn(2, 4), torch.randn(2, 4)
    student[:, 3], teacher[:, 3] = -math.inf, -math.inf  # e.g. padded vocabulary entries
    student.requires_grad_(True)
    loss = loss_fn(student, teacher, 2.0)
    assert loss.item() == pytest.approx(loss_fn(student[:, :3], teacher[:, :3], 2.0).item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(student.grad).all()


def test_teacher_gradients_stay_finite_where_its_probability_underflows() -> None:
    teacher = torch.tensor([[0.0, 200.0, 1.0]], requires_grad=True)  # p_T of class 0 is exactly 0 in float32
    student = torch.randn(1, 3, requires_grad=True)
    kd_loss(student, teacher, 1.0).backward()
    assert torch.isfinite(teacher.grad).all() and torch.isfinite(student.grad).all()


def test_kd_scales_with_t_squared() -> None:
    student, teacher = _pair(4, 5)
    for temperature in (0.5, 2.0, 8.0):
        at_t = kd_loss(student, teacher, temperature)
        # Dividing the logits by T beforehand and using T = 1 gives the same KL without the T² weight.
        unweighted = kd_loss(student / temperature, teacher / temperature, 1.0)
        assert at_t.item() == pytest.approx(temperature**2 * unweighted.item(), rel=1e-10)
        assert at_t.item() == pytest.approx(_reference(_kd_row, student, teacher, None, temperature), rel=1e-10)


def test_per_example_temperature_equals_per_example_calls() -> None:
    student, teacher = _pair(3, 5)
    temperatures = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)
    got = kd_loss(student, teacher, temperature=temperatures)
    separate = [kd_loss(student[b : b + 1], teacher[b : b + 1], float(temperatures[b])) for b in range(3)]
    assert got.item() == pytest.approx(sum(x.item() for x in separate) / 3, rel=1e-10)
    assert got.item() == pytest.approx(_reference(_kd_row, student, teacher, None, temperatures), rel=1e-10)


def test_per_position_temperature_on_sequences() -> None:
    student, teacher = _pair(2, 4, 5)
    per_position = torch.rand(2, 4, dtype=torch.float64) * 4 + 0.5
    per_position[1, 3] = float("nan")  # padding: never read
    got = kd_loss(student, teacher, temperature=per_position, mask=MASK)
    assert got.item() == pytest.approx(_reference(_kd_row, student, teacher, MASK, per_position), rel=1e-10)
    per_example = torch.tensor([1.5, 3.0], dtype=torch.float64)
    got = soft_ce_loss(student, teacher, temperature=per_example, mask=MASK)
    expected = _reference(_soft_ce_row, student, teacher, MASK, per_example[:, None].expand(2, 4))
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_hard_ce_matches_reference_and_ignores_minus_100() -> None:
    logits = torch.randn(2, 4, 3, dtype=torch.float64)
    labels = torch.tensor([[0, 2, -100, 1], [1, -100, 0, 2]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    expected = []
    for b in range(2):
        for pos in range(4):
            if labels[b, pos] != -100 and mask[b, pos]:
                row = logits[b, pos].tolist()
                expected.append(-math.log(_softmax(row)[int(labels[b, pos])]))
    got = hard_ce_loss(logits, labels, mask=mask)
    assert got.item() == pytest.approx(sum(expected) / len(expected), rel=1e-10)
    flat = logits[0].tolist()
    got_2d = hard_ce_loss(logits[0], torch.tensor([0, 2, -100, 1]))
    expected_2d = [-math.log(_softmax(flat[i])[y]) for i, y in ((0, 0), (1, 2), (3, 1))]
    assert got_2d.item() == pytest.approx(sum(expected_2d) / 3, rel=1e-10)


def test_hard_ce_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = hard_ce_loss(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_all_masked_kd_is_zero_with_grad() -> None:
    student = torch.full((2, 3), float("nan"), requires_grad=True)
    loss = kd_loss(student, torch.randn(2, 3), mask=torch.zeros(2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros(2, 3))


# ----------------------------------------------------------------- masking and gradients

LOSSES = {
    "kd": lambda s, t, mask: kd_loss(s, t, 2.0, mask=mask),
    "soft_ce": lambda s, t, mask: soft_ce_loss(s, t, 2.0, mask=mask),
    "logits_mse": lambda s, t, mask: logits_mse_loss(s, t, mask=mask),
    "logits_mse_t": lambda s, t, mask: logits_mse_loss(s, t, temperature=2.0, mask=mask),
    "hard_ce": lambda s, t, mask: hard_ce_loss(s, torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]]), mask=mask),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("junk", [1e30, -1e30, float("inf"), float("-inf"), float("nan")])
def test_padded_positions_never_matter(name: str, junk: float) -> None:
    loss_fn = LOSSES[name]
    student, teacher = _pair(2, 4, 3)
    assert_padding_never_matters(loss_fn, student, teacher, MASK, MASK == 0, junk)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name: str) -> None:
    student, teacher = _pair(2, 4, 3)
    student.requires_grad_(True)
    if name != "hard_ce":
        teacher.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s, t: LOSSES[name](s, t, MASK), (student, teacher))
    assert torch.autograd.gradcheck(lambda s, t: LOSSES[name](s, t, None), (student, teacher))


def test_gradcheck_with_per_position_temperature() -> None:
    student, teacher = (x.requires_grad_(True) for x in _pair(2, 4, 3))
    temperature = torch.rand(2, 4, dtype=torch.float64) + 0.5
    assert torch.autograd.gradcheck(lambda s, t: kd_loss(s, t, temperature, MASK), (student, teacher))


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("loss_fn", [kd_loss, soft_ce_loss, logits_mse_loss])
def test_shape_mismatch_names_both_shapes(loss_fn) -> None:
    with pytest.raises(ValueError, match=r"\(2, 5\).*\(2, 7\)"):
        loss_fn(torch.randn(2, 5), torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        loss_fn(torch.randn(2, 4, 5), torch.randn(2, 4, 5), mask=torch.ones(2, 3))


@pytest.mark.parametrize("loss_fn", [kd_loss, soft_ce_loss])
@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), torch.tensor([1.0, 0.0])])
def test_temperature_must_be_positive(loss_fn, temperature) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        loss_fn(torch.randn(2, 3), torch.randn(2, 3), temperature=temperature)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_logits_mse_temperature_must_be_finite_and_positive(temperature: float) -> None:
    with pytest.raises(ValueError, match="logits_mse: temperature must be a finite number > 0"):
        logits_mse_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=temperature)
    with pytest.raises(ValueError, match="logits_mse: temperature must be a number"):
        logits_mse_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=torch.ones(2))


def test_logits_mse_temperature_is_a_validated_option() -> None:
    assert "temperature" in accepted_options(logits_mse_loss)
    check_options("logits_mse", {"temperature": 2.0}, "response_options")
    with pytest.raises(ValueError, match="temperature must be above 0"):
        check_options("logits_mse", {"temperature": 0.0}, "response_options")


def test_temperature_of_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"temperature has shape \(3,\)"):
        kd_loss(torch.randn(2, 4, 5), torch.randn(2, 4, 5), temperature=torch.ones(3))


def test_hard_ce_label_shape_mismatch() -> None:
    with pytest.raises(ValueError, match=r"labels shape \(3,\).*logits shape \(2, 5\)"):
        hard_ce_loss(torch.randn(2, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"mask has shape \(3,\)"):
        hard_ce_loss(torch.randn(2, 5), torch.tensor([0, 1]), mask=torch.ones(3))
