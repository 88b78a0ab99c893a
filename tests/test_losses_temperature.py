"""Dynamic temperatures (TextBrewer flsw, cwsm) and the KD/soft-CE losses that use them, against hand references."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import kd_loss, soft_ce_loss
from distill.losses.temperature import cwsm_temperature, flsw_temperature
from tests.references import softmax_row, valid_position

MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])  # n_b = 3, 2
B, H, L = 2, 2, 3


def _positions(logits, mask) -> list[tuple[tuple[int, ...], list[float]]]:
    values = logits.tolist()
    if logits.dim() == 2:
        return [((b,), values[b]) for b in range(len(values)) if mask is None or mask[b]]
    return [
        ((b, p), values[b][p]) for b in range(len(values)) for p in range(len(values[b])) if valid_position(mask, b, p)
    ]


def _spread(weights: dict, base: float, beta: float) -> dict:
    mean = sum(weights.values()) / len(weights)
    return {index: base + (mean - w) * beta for index, w in weights.items()}


def _flsw_reference(student, teacher, base, beta, gamma, mask=None) -> dict:
    weights = {}
    for (index, s_row), (_, t_row) in zip(_positions(student, mask), _positions(teacher, mask), strict=True):
        s_norm, t_norm = math.sqrt(sum(x * x for x in s_row)) + 1e-4, math.sqrt(sum(x * x for x in t_row)) + 1e-4
        cosine = sum(s / s_norm * t / t_norm for s, t in zip(s_row, t_row, strict=True))
        weights[index] = (1 - cosine) ** gamma
    return _spread(weights, base, beta)


def _cwsm_reference(student, base, beta, mask=None) -> dict:
    weights = {index: 1 / (max(softmax_row(row)) + 1e-3) for index, row in _positions(student, mask)}
    return _spread(weights, base, beta)


def _kd_reference(student, teacher, taus: dict, mask=None, squared: bool = True) -> float:
    losses = []
    for (index, s_row), (_, t_row) in zip(_positions(student, mask), _positions(teacher, mask), strict=True):
        tau = taus[index]
        p_s, p_t = softmax_row([z / tau for z in s_row]), softmax_row([z / tau for z in t_row])
        if squared:  # kd: T² · KL
            losses.append(tau**2 * sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True)))
        else:  # soft_ce
            losses.append(-sum(pt * math.log(ps) for pt, ps in zip(p_t, p_s, strict=True)))
    return sum(losses) / len(losses)


# ----------------------------------------------------------------- dynamic temperatures


def _logits(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape, dtype=torch.float64) * 2, torch.randn(*shape, dtype=torch.float64) * 2


def _as_tensor(taus: dict, shape, base: float) -> torch.Tensor:
    out = torch.full(shape, base, dtype=torch.float64)
    for index, tau in taus.items():
        out[index] = tau
    return out


@pytest.mark.parametrize(("shape", "mask"), [((4, 5), None), ((4, 5), torch.tensor([1, 0, 1, 1])), ((2, 3, 5), MASK)])
def test_flsw_and_cwsm_match_reference(shape, mask) -> None:
    student, teacher = _logits(*shape)
    student.requires_grad_(True)
    flsw = flsw_temperature(student, teacher, 4.0, beta=1.5, gamma=2.0, mask=mask)
    expected = _as_tensor(_flsw_reference(student, teacher, 4.0, 1.5, 2.0, mask), shape[:-1], 4.0)
    torch.testing.assert_close(flsw, expected, rtol=1e-10, atol=1e-12)
    cwsm = cwsm_temperature(student, 4.0, beta=0.5, mask=mask)
    expected = _as_tensor(_cwsm_reference(student, 4.0, 0.5, mask), shape[:-1], 4.0)
    torch.testing.assert_close(cwsm, expected, rtol=1e-10, atol=1e-12)
    assert not flsw.requires_grad and not cwsm.requires_grad


def test_temperatures_ignore_junk_in_padding() -> None:
    student, teacher = _logits(2, 3, 5)
    clean = flsw_temperature(student, teacher, 4.0, 1.0, 2.0, mask=MASK)
    student[1, 2], teacher[1, 2] = float("nan"), float("inf")
    dirty = flsw_temperature(student, teacher, 4.0, 1.0, 2.0, mask=MASK)
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    assert torch.isfinite(cwsm_temperature(student, 4.0, 1.0, mask=MASK)).all()


def test_kd_constant_scheduler_is_the_old_behaviour() -> None:
    student, teacher = _logits(2, 3, 5)
    old = kd_loss(student, teacher, 2.0, MASK)
    assert kd_loss(student, teacher, 2.0, MASK, temperature_scheduler="constant").item() == old.item()
    assert kd_loss(student, teacher, 2.0, MASK, temperature_scheduler="flsw").item() != pytest.approx(old.item())


@pytest.mark.parametrize("mask", [None, MASK])
def test_kd_with_flsw_uses_per_position_temperature_and_t_squared(mask) -> None:
    student, teacher = _logits(2, 3, 5)
    got = kd_loss(student, teacher, 4.0, mask, temperature_scheduler="flsw", scheduler_beta=2.0, scheduler_gamma=1.0)
    taus = _flsw_reference(student, teacher, 4.0, 2.0, 1.0, mask)
    assert got.item() == pytest.approx(_kd_reference(student, teacher, taus, mask), rel=1e-10)


def test_soft_ce_with_cwsm_matches_reference() -> None:
    student, teacher = _logits(6, 4)
    got = soft_ce_loss(student, teacher, 2.0, temperature_scheduler="cwsm", scheduler_beta=0.3)
    taus = _cwsm_reference(student, 2.0, 0.3)
    assert got.item() == pytest.approx(_kd_reference(student, teacher, taus, squared=False), rel=1e-10)


def test_scheduled_temperature_is_a_stop_gradient() -> None:
    """The gradient is that of kd with the scheduled temperatures as constants (gradcheck would see
    the temperature move under finite differences, so compare with the constant-temperature call)."""
    student, teacher = (x.requires_grad_(True) for x in _logits(2, 3, 4))
    kd_loss(student, teacher, 3.0, MASK, temperature_scheduler="flsw").backward()
    scheduled = student.grad.clone(), teacher.grad.clone()
    student.grad, teacher.grad = None, None
    taus = flsw_temperature(student, teacher, 3.0, 1.0, 2.0, mask=MASK)
    kd_loss(student, teacher, taus, MASK).backward()
    torch.testing.assert_close(scheduled, (student.grad, teacher.grad), rtol=0, atol=0)


def test_scheduled_kd_ignores_junk_in_padding() -> None:
    student, teacher = _logits(2, 3, 4)
    clean = kd_loss(student, teacher, 3.0, MASK, temperature_scheduler="cwsm")
    student[1, 2], teacher[1, 2] = float("nan"), float("-inf")
    student.requires_grad_(True)
    dirty = kd_loss(student, teacher, 3.0, MASK, temperature_scheduler="cwsm")
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("loss_fn", [kd_loss, soft_ce_loss])
def test_scheduler_errors(loss_fn) -> None:
    student, teacher = _logits(3, 4)
    with pytest.raises(ValueError, match="unknown temperature_scheduler 'fslw'; choose one of constant, flsw, cwsm"):
        loss_fn(student, teacher, 2.0, temperature_scheduler="fslw")
    with pytest.raises(ValueError, match=r"needs a number as the base temperature.*shape \(3,\)"):
        loss_fn(student, teacher, torch.ones(3), temperature_scheduler="flsw")
    with pytest.raises(ValueError, match=r"gave a temperature .* <= 0.*lower scheduler_beta"):
        loss_fn(student, teacher, 0.1, temperature_scheduler="cwsm", scheduler_beta=100.0)
