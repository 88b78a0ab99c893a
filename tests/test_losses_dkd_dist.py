"""DKD and DIST against hand-written references (plain-Python math, no torch functional path)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.dkd_dist import dist_loss, dkd_loss
from distill.losses.registry import get
from distill.losses.response import kd_loss

# ----------------------------------------------------------------- independent references (pure Python)


def _softmax(row: list[float], temperature: float = 1.0) -> list[float]:
    top = max(z / temperature for z in row)
    exps = [math.exp(z / temperature - top) for z in row]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _dkd_row(student: list[float], teacher: list[float], target: int, alpha: float, beta: float, t: float) -> float:
    p_s, p_t = _softmax(student, t), _softmax(teacher, t)
    tckd = _kl([p_t[target], 1 - p_t[target]], [p_s[target], 1 - p_s[target]])
    others_s = [z for c, z in enumerate(student) if c != target]
    others_t = [z for c, z in enumerate(teacher) if c != target]
    nckd = _kl(_softmax(others_t, t), _softmax(others_s, t))
    return t**2 * (alpha * tckd + beta * nckd)


def _pearson(x: list[float], y: list[float], eps: float = 1e-8) -> float:
    mean_x, mean_y = sum(x) / len(x), sum(y) / len(y)
    dx, dy = [v - mean_x for v in x], [v - mean_y for v in y]
    dot = sum(a * b for a, b in zip(dx, dy, strict=True))
    return dot / (math.sqrt(sum(a * a for a in dx)) * math.sqrt(sum(b * b for b in dy)) + eps)


def _dist_reference(rows_s: list[list[float]], rows_t: list[list[float]], beta: float, gamma: float, t: float) -> float:
    y_s = [_softmax(row, t) for row in rows_s]
    y_t = [_softmax(row, t) for row in rows_t]
    inter = 1 - sum(_pearson(s, q) for s, q in zip(y_s, y_t, strict=True)) / len(y_s)
    classes = len(y_s[0])
    columns = [([row[j] for row in y_s], [row[j] for row in y_t]) for j in range(classes)]
    intra = 1 - sum(_pearson(s, q) for s, q in columns) / classes
    return t**2 * (beta * inter + gamma * intra)


def _valid_indices(shape: tuple[int, ...], labels: torch.Tensor | None, mask: torch.Tensor | None):
    """Position indices (tuples) that are neither masked nor labelled -100, by explicit loops."""
    if len(shape) == 1:
        indices = [(b,) for b in range(shape[0])]
    else:
        indices = [(b, pos) for b in range(shape[0]) for pos in range(shape[1])]
    return [i for i in indices if (mask is None or bool(mask[i])) and (labels is None or int(labels[i]) != -100)]


def _dkd_reference(student, teacher, labels, alpha, beta, t, mask=None) -> float:
    losses = [
        _dkd_row(student[i].tolist(), teacher[i].tolist(), int(labels[i]), alpha, beta, t)
        for i in _valid_indices(tuple(labels.shape), labels, mask)
    ]
    return sum(losses) / len(losses)


def _dist_reference_masked(student, teacher, beta, gamma, t, mask=None) -> float:
    indices = _valid_indices(tuple(student.shape[:-1]), None, mask)
    return _dist_reference(
        [student[i].tolist() for i in indices], [teacher[i].tolist() for i in indices], beta, gamma, t
    )


MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
LABELS = torch.tensor([[0, 4, -100, 2], [3, 1, 1, -100]])


def _pair(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape, dtype=torch.float64) * 2, torch.randn(*shape, dtype=torch.float64) * 2


# ----------------------------------------------------------------- values


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("masked", [False, True])
def test_dkd_3d_matches_reference(temperature: float, masked: bool) -> None:
    student, teacher = _pair(2, 4, 5)
    mask = MASK if masked else None
    got = dkd_loss(student, teacher, LABELS, alpha=0.7, beta=3.0, temperature=temperature, mask=mask)
    expected = _dkd_reference(student, teacher, LABELS, 0.7, 3.0, temperature, mask)
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("masked", [False, True])
def test_dkd_2d_matches_reference(masked: bool) -> None:
    student, teacher = _pair(4, 6)
    labels = torch.tensor([5, 0, 2, 2])
    mask = torch.tensor([1, 0, 1, 1]) if masked else None
    got = dkd_loss(student, teacher, labels, mask=mask)  # the defaults: alpha 1, beta 8, T 4
    assert got.item() == pytest.approx(_dkd_reference(student, teacher, labels, 1.0, 8.0, 4.0, mask), rel=1e-10)


def test_dkd_per_example_temperature_equals_per_example_calls() -> None:
    student, teacher = _pair(3, 5)
    labels = torch.tensor([1, 4, 0])
    temperatures = torch.tensor([0.5, 2.0, 5.0], dtype=torch.float64)
    got = dkd_loss(student, teacher, labels, temperature=temperatures)
    rows = [
        _dkd_row(student[b].tolist(), teacher[b].tolist(), int(labels[b]), 1.0, 8.0, float(temperatures[b]))
        for b in range(3)
    ]
    assert got.item() == pytest.approx(sum(rows) / 3, rel=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("masked", [False, True])
def test_dist_3d_matches_reference(temperature: float, masked: bool) -> None:
    student, teacher = _pair(2, 4, 5)
    mask = MASK if masked else None
    got = dist_loss(student, teacher, beta=0.5, gamma=2.0, temperature=temperature, mask=mask)
    expected = _dist_reference_masked(student, teacher, 0.5, 2.0, temperature, mask)
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("masked", [False, True])
def test_dist_2d_matches_reference(masked: bool) -> None:
    student, teacher = _pair(5, 4)
    mask = torch.tensor([1, 1, 0, 1, 0]) if masked else None
    got = dist_loss(student, teacher, mask=mask)  # the defaults: beta = gamma = 1, T = 1
    assert got.item() == pytest.approx(_dist_reference_masked(student, teacher, 1.0, 1.0, 1.0, mask), rel=1e-10)


# ----------------------------------------------------------------- properties


@pytest.mark.parametrize(("target", "temperature"), [(0, 1.0), (2, 4.0), (4, 0.5)])
def test_dkd_with_beta_one_minus_teacher_target_prob_is_kd(target: int, temperature: float) -> None:
    """Eq. 3 of the paper: KD = TCKD + (1 − p_t^T) · NCKD."""
    student, teacher = _pair(1, 5)
    p_target = _softmax(teacher[0].tolist(), temperature)[target]
    dkd = dkd_loss(student, teacher, torch.tensor([target]), alpha=1.0, beta=1 - p_target, temperature=temperature)
    assert dkd.item() == pytest.approx(kd_loss(student, teacher, temperature).item(), rel=1e-10)


def test_dkd_is_zero_for_identical_logits() -> None:
    logits = torch.randn(3, 4, 6)
    labels = torch.randint(0, 6, (3, 4))
    assert dkd_loss(logits, logits.clone(), labels).item() == pytest.approx(0.0, abs=1e-6)


def test_dist_is_zero_for_identical_logits() -> None:
    # Not exactly 0: eps in ρ = a·b / (‖a‖‖b‖ + eps) leaves 1 − ρ ≈ eps / ‖a‖², which T² scales up, so
    # the check uses T = 1 and logits spread enough that ‖a‖² is not tiny.
    logits = torch.randn(3, 4, 6) * 2
    assert dist_loss(logits, logits.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert dist_loss(logits.double(), logits.double()).item() == pytest.approx(0.0, abs=1e-6)


def test_dist_is_invariant_to_a_constant_added_to_each_row() -> None:
    student, teacher = _pair(2, 4, 5)
    shift_s = torch.randn(2, 4, 1, dtype=torch.float64) * 10
    shift_t = torch.randn(2, 4, 1, dtype=torch.float64) * 10
    base = dist_loss(student, teacher, temperature=2.0, mask=MASK)
    shifted = dist_loss(student + shift_s, teacher + shift_t, temperature=2.0, mask=MASK)
    assert shifted.item() == pytest.approx(base.item(), rel=1e-10)


def test_dkd_labels_of_minus_100_are_ignored() -> None:
    student, teacher = _pair(5, 4)
    labels = torch.tensor([1, -100, 3, -100, 0])
    kept = torch.tensor([0, 2, 4])
    got = dkd_loss(student, teacher, labels, temperature=2.0)
    assert got.item() == pytest.approx(dkd_loss(student[kept], teacher[kept], labels[kept], temperature=2.0).item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dkd_stays_finite_when_probabilities_underflow(dtype: torch.dtype) -> None:
    # p_t ≈ 1 for the teacher (1 − p_t underflows) and ≈ 0 for the student, and classes with p = 0.
    student = torch.tensor([[-300.0, 0.0, 5.0, -200.0], [0.0, 0.0, 0.0, 0.0]], dtype=dtype, requires_grad=True)
    teacher = torch.tensor([[200.0, 0.0, -300.0, 1.0], [0.0, -900.0, 3.0, 0.0]], dtype=dtype, requires_grad=True)
    labels = torch.tensor([0, 1])
    loss = dkd_loss(student, teacher, labels, temperature=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()
    expected = _dkd_reference(student.detach().double(), teacher.detach().double(), labels, 1.0, 8.0, 1.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_dist_single_position_has_intra_term_one_and_finite_grads() -> None:
    # One row: every centred class column is zero, so its correlation is 0 / (0 + eps) = 0.
    student, teacher = (x.requires_grad_(True) for x in _pair(1, 5))
    loss = dist_loss(student, teacher, beta=0.0, gamma=1.0)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert torch.isfinite(student.grad).all() and torch.isfinite(teacher.grad).all()


def test_dist_pearson_epsilon_is_the_official_1e8_on_the_product_of_norms() -> None:
    # hunto/DIST_KD: ρ = (a·b) / (‖a‖ ‖b‖ + 1e-8) of the centred rows. Row 0 is constant (ρ = 0 / 1e-8 = 0,
    # finite); row 1 varies so little that ‖a‖ ‖b‖ is about 2e-8, where the epsilon shrinks ρ by a third.
    student = [[0.5, 0.5, 0.5, 0.5], [0.0, 2e-7, 0.0, 0.0]]
    teacher = [[1.0, -1.0, 0.0, 2.0], [2.0, 0.0, 1.0, -1.0]]
    y_s, y_t = [_softmax(row) for row in student], [_softmax(row) for row in teacher]
    expected = 1 - (_pearson(y_s[0], y_t[0], 1e-8) + _pearson(y_s[1], y_t[1], 1e-8)) / 2
    got = dist_loss(torch.tensor(student, dtype=torch.float64), torch.tensor(teacher, dtype=torch.float64), gamma=0.0)
    assert math.isfinite(got.item()) and got.item() == pytest.approx(expected, rel=1e-7)
    smaller_eps = 1 - (_pearson(y_s[0], y_t[0], 1e-12) + _pearson(y_s[1], y_t[1], 1e-12)) / 2
    assert abs(got.item() - smaller_eps) > 0.05  # the epsilon matters here, so this pins its value
    assert _pearson(y_s[0], y_t[0], 1e-8) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda s, t: dkd_loss(s, t, torch.full((2, 3), -100)),
        lambda s, t: dkd_loss(s, t, torch.zeros(2, 3, dtype=torch.long), mask=torch.zeros(2, 3)),
        lambda s, t: dist_loss(s, t, mask=torch.zeros(2, 3)),
    ],
)
def test_no_valid_position_is_zero_with_grad(call) -> None:
    student = torch.full((2, 3, 4), float("nan"), requires_grad=True)
    loss = call(student, torch.randn(2, 3, 4))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_registered_names() -> None:
    assert get("dkd") is dkd_loss and get("dist") is dist_loss


# ----------------------------------------------------------------- masking and gradients

LOSSES = {
    "dkd": lambda s, t, mask: dkd_loss(s, t, torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]]), 1.0, 2.0, 2.0, mask=mask),
    "dkd_with_ignored_labels": lambda s, t, mask: dkd_loss(
        s, t, torch.tensor([[0, -100, 2, 0], [2, 2, 1, 0]]), mask=mask
    ),
    "dist": lambda s, t, mask: dist_loss(s, t, 1.0, 2.0, 2.0, mask=mask),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("junk", [1e30, -1e30, float("inf"), float("-inf"), float("nan")])
def test_padded_positions_never_matter(name: str, junk: float) -> None:
    loss_fn = LOSSES[name]
    student, teacher = _pair(2, 4, 3)
    clean = loss_fn(student, teacher, MASK)
    padded = MASK == 0
    student, teacher = student.clone(), teacher.clone()
    student[padded], teacher[padded] = junk, junk
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    dirty = loss_fn(student, teacher, MASK)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    for grad in (student.grad, teacher.grad):
        assert torch.isfinite(grad).all()
        assert torch.equal(grad[padded], torch.zeros_like(grad[padded]))


def test_dkd_labels_at_padded_positions_are_never_read() -> None:
    student, teacher = _pair(2, 4, 3)
    labels = torch.tensor([[0, 1, 2, 999], [2, 0, -7, 12345]])  # out of range only where MASK is 0
    clean = dkd_loss(student, teacher, labels.clamp(0, 2), mask=MASK)
    assert dkd_loss(student, teacher, labels, mask=MASK).item() == pytest.approx(clean.item(), rel=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradcheck(name: str) -> None:
    student, teacher = (x.requires_grad_(True) for x in _pair(2, 4, 3))
    assert torch.autograd.gradcheck(lambda s, t: LOSSES[name](s, t, MASK), (student, teacher))
    assert torch.autograd.gradcheck(lambda s, t: LOSSES[name](s, t, None), (student, teacher))


def test_gradcheck_2d() -> None:
    student, teacher = (x.requires_grad_(True) for x in _pair(4, 5))
    labels = torch.tensor([0, 4, 2, -100])
    assert torch.autograd.gradcheck(lambda s, t: dkd_loss(s, t, labels, 0.5, 3.0, 1.5), (student, teacher))
    assert torch.autograd.gradcheck(lambda s, t: dist_loss(s, t, 1.0, 1.0, 3.0), (student, teacher))


# ----------------------------------------------------------------- errors


def test_logit_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"dkd: student shape \(2, 5\).*teacher shape \(2, 7\)"):
        dkd_loss(torch.randn(2, 5), torch.randn(2, 7), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"dist: student shape \(2, 5\).*teacher shape \(2, 7\)"):
        dist_loss(torch.randn(2, 5), torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"dist: logits must be .* got shape \(5,\)"):
        dist_loss(torch.randn(5), torch.randn(5))


@pytest.mark.parametrize(
    "loss_fn", [dist_loss, lambda s, t, mask: dkd_loss(s, t, torch.zeros(2, 4, dtype=torch.long), mask=mask)]
)
def test_mask_shape_mismatch_names_both_shapes(loss_fn) -> None:
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        loss_fn(torch.randn(2, 4, 5), torch.randn(2, 4, 5), mask=torch.ones(2, 3))


def test_dkd_label_errors() -> None:
    with pytest.raises(ValueError, match=r"dkd: labels shape \(3,\) does not match logits shape \(2, 5\)"):
        dkd_loss(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"dkd: labels shape \(2,\) does not match logits shape \(2, 4, 5\)"):
        dkd_loss(torch.randn(2, 4, 5), torch.randn(2, 4, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"label 5 is not a class index in \[0, 5\)"):
        dkd_loss(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"label -1 is not a class index"):
        dkd_loss(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([0, 0]))


def test_temperature_errors() -> None:
    with pytest.raises(ValueError, match="dkd: temperature must be > 0"):
        dkd_loss(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), temperature=0.0)
    with pytest.raises(ValueError, match="dist: temperature must be > 0"):
        dist_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=float("nan"))
    with pytest.raises(ValueError, match=r"dist: temperature must be a number, got a tensor of shape \(2,\)"):
        dist_loss(torch.randn(2, 3), torch.randn(2, 3), temperature=torch.ones(2))
