"""Relation losses against hand-written references (explicit loops over pairs and triplets, plain math)."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.registry import get
from distill.losses.relation import cc_loss, pkt_loss, rkd_angle_loss, rkd_distance_loss, sp_loss

# ----------------------------------------------------------------- independent references (pure Python)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _norm(a: list[float]) -> float:
    return math.sqrt(_dot(a, a))


def _sub(a: list[float], b: list[float]) -> list[float]:
    return [x - y for x, y in zip(a, b, strict=True)]


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1.0 else abs(x) - 0.5


def _ref_rkd_distance(s: list[list[float]], t: list[list[float]]) -> float:
    n = len(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    mu_s = sum(_norm(_sub(s[i], s[j])) for i, j in pairs) / len(pairs)
    mu_t = sum(_norm(_sub(t[i], t[j])) for i, j in pairs) / len(pairs)
    total = sum(_huber(_norm(_sub(s[i], s[j])) / mu_s - _norm(_sub(t[i], t[j])) / mu_t) for i, j in pairs)
    return total / n**2


def _cos_at(e: list[list[float]], i: int, j: int, k: int) -> float:
    a, b = _sub(e[i], e[j]), _sub(e[k], e[j])
    return _dot(a, b) / (_norm(a) * _norm(b))


def _ref_rkd_angle(s: list[list[float]], t: list[list[float]]) -> float:
    n = len(s)
    total = 0.0
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if len({i, j, k}) == 3:
                    total += _huber(_cos_at(s, i, j, k) - _cos_at(t, i, j, k))
    return total / n**3


def _row_normalised_gram(e: list[list[float]]) -> list[list[float]]:
    gram = [[_dot(a, b) for b in e] for a in e]
    return [[g / _norm(row) for g in row] for row in gram]


def _ref_sp(s: list[list[float]], t: list[list[float]]) -> float:
    g_s, g_t = _row_normalised_gram(s), _row_normalised_gram(t)
    n = len(s)
    return sum((g_t[i][j] - g_s[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def _taylor_matrix(e: list[list[float]], gamma: float, order: int) -> list[list[float]]:
    unit = [[x / _norm(row) for x in row] for row in e]
    return [
        [sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * _dot(a, b) ** p for p in range(order + 1))
         for b in unit]
        for a in unit
    ]  # fmt: skip


def _ref_cc(s: list[list[float]], t: list[list[float]], gamma: float = 0.4, order: int = 2) -> float:
    k_s, k_t = _taylor_matrix(s, gamma, order), _taylor_matrix(t, gamma, order)
    n = len(s)
    return sum((k_t[i][j] - k_s[i][j]) ** 2 for i in range(n) for j in range(n)) / n**2


def _ref_cc_bilinear(s: list[list[float]], t: list[list[float]]) -> float:
    delta = [[abs(x - y) for x, y in zip(a, b, strict=True)] for a, b in zip(s, t, strict=True)]
    return sum(_dot(delta[i], delta[i + 1]) for i in range(len(s) - 1)) / (len(s) - 1)


def _ref_pkt(s: list[list[float]], t: list[list[float]], eps: float = 1e-7) -> float:
    def conditional(e: list[list[float]]) -> list[list[float]]:
        unit = [[x / (_norm(row) + eps) for x in row] for row in e]
        kernel = [[(_dot(a, b) + 1.0) / 2.0 for b in unit] for a in unit]
        return [[k / sum(row) for k in row] for row in kernel]

    p_s, p_t = conditional(s), conditional(t)
    n = len(s)
    return sum(p_t[i][j] * math.log((p_t[i][j] + eps) / (p_s[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


def _rows(x: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[float]]:
    rows = x.reshape(x.shape[0], -1).tolist()
    return [row for b, row in enumerate(rows) if mask is None or mask[b]]


# name: (loss under test, reference, whether student and teacher may differ in width)
CASES = {
    "rkd_distance": (rkd_distance_loss, _ref_rkd_distance, True),
    "rkd_angle": (rkd_angle_loss, _ref_rkd_angle, True),
    "sp": (sp_loss, _ref_sp, True),
    "cc": (cc_loss, _ref_cc, True),
    "cc_bilinear": (lambda s, t, mask=None: cc_loss(s, t, mask, kernel="bilinear"), _ref_cc_bilinear, False),
    "pkt": (pkt_loss, _ref_pkt, True),
}
MASK = torch.tensor([1, 0, 1, 1, 0, 1])


def _pair(name: str, batch: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, 2, 3) feature map for the student and (B, 4) or (B, 6) vectors for the teacher, float64."""
    student = torch.randn(batch, 2, 3, dtype=torch.float64) * 2
    teacher = torch.randn(batch, 4 if CASES[name][2] else 6, dtype=torch.float64)
    return student, teacher


# ----------------------------------------------------------------- values


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mask", [None, MASK], ids=["unmasked", "masked"])
def test_matches_reference(name: str, mask: torch.Tensor | None) -> None:
    loss_fn, reference, _ = CASES[name]
    student, teacher = _pair(name)
    expected = reference(_rows(student, mask), _rows(teacher, mask))
    assert loss_fn(student, teacher, mask=mask).item() == pytest.approx(expected, rel=1e-10)


def test_cc_options_match_reference_and_high_order_reaches_the_gaussian_kernel() -> None:
    student, teacher = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    s, t = _rows(student), _rows(teacher)
    got = cc_loss(student, teacher, gamma=1.3, order=4)
    assert got.item() == pytest.approx(_ref_cc(s, t, gamma=1.3, order=4), rel=1e-10)

    def rbf(e: list[list[float]]) -> list[list[float]]:  # exact exp(−γ||u_i − u_j||²) on unit vectors
        unit = [[x / _norm(row) for x in row] for row in e]
        return [[math.exp(-0.4 * _norm(_sub(a, b)) ** 2) for b in unit] for a in unit]

    k_s, k_t = rbf(s), rbf(t)
    exact = sum((k_t[i][j] - k_s[i][j]) ** 2 for i in range(5) for j in range(5)) / 25
    assert cc_loss(student, teacher, order=30).item() == pytest.approx(exact, rel=1e-9)


def test_rkd_is_invariant_to_scaling_and_translation() -> None:
    student, teacher = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    moved_s = student * 3.0 + torch.tensor([1.0, -2.0, 0.5, 4.0, -1.0], dtype=torch.float64)
    moved_t = teacher * 0.5 - 2.5
    for loss_fn in (rkd_distance_loss, rkd_angle_loss):
        base = loss_fn(student, teacher).item()
        assert base > 1e-3
        assert loss_fn(student * 3.0, teacher * 0.5).item() == pytest.approx(base, rel=1e-9)
        assert loss_fn(moved_s, moved_t).item() == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_zero_for_identical_features(name: str) -> None:
    features = torch.randn(6, 2, 3, dtype=torch.float64)
    assert abs(CASES[name][0](features, features.clone()).item()) < 1e-9
    features32 = features.float()
    assert abs(CASES[name][0](features32, features32.clone()).item()) < 1e-6


def test_pkt_tolerates_an_all_zero_row() -> None:
    student = torch.randn(4, 3, dtype=torch.float64)
    student[2] = 0.0
    student.requires_grad_(True)
    loss = pkt_loss(student, torch.randn(4, 5, dtype=torch.float64))
    loss.backward()
    assert math.isfinite(loss.item()) and torch.isfinite(student.grad).all()


# ----------------------------------------------------------------- masking and gradients


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("junk", [float("nan"), float("inf"), -1e30])
def test_masked_rows_never_matter(name: str, junk: float) -> None:
    loss_fn = CASES[name][0]
    student, teacher = _pair(name)
    valid = MASK.bool()
    clean = loss_fn(student[valid], teacher[valid])
    student, teacher = student.clone(), teacher.clone()
    student[~valid], teacher[~valid] = junk, junk
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    dirty = loss_fn(student, teacher, mask=MASK)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    for tensor in (student, teacher):
        assert torch.isfinite(tensor.grad).all()
        assert torch.equal(tensor.grad[~valid], torch.zeros_like(tensor.grad[~valid]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name: str) -> None:
    loss_fn = CASES[name][0]
    student, teacher = (x.requires_grad_(True) for x in _pair(name, batch=6))
    assert torch.autograd.gradcheck(lambda s, t: loss_fn(s, t, mask=MASK), (student, teacher))
    assert torch.autograd.gradcheck(lambda s, t: loss_fn(s, t), (student, teacher))


@pytest.mark.parametrize("name", sorted(CASES))
def test_too_few_valid_rows_is_zero_with_grad(name: str) -> None:
    loss_fn = CASES[name][0]
    student, teacher = _pair(name, batch=4)
    student[1:] = float("nan")
    student.requires_grad_(True)
    loss = loss_fn(student, teacher, mask=torch.tensor([1, 0, 0, 0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(student.grad, torch.zeros_like(student))


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(CASES))
def test_batch_too_small(name: str) -> None:
    loss_fn = CASES[name][0]
    minimum = 3 if name == "rkd_angle" else 2
    student, teacher = _pair(name, batch=minimum - 1)
    with pytest.raises(ValueError, match=f"needs at least {minimum}; got batch size {minimum - 1}"):
        loss_fn(student, teacher)
    assert torch.isfinite(loss_fn(*_pair(name, batch=minimum)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_shapes_and_masks(name: str) -> None:
    loss_fn = CASES[name][0]
    student, teacher = _pair(name)
    with pytest.raises(ValueError, match=r"one flag per example, shape \(6,\)"):
        loss_fn(student, teacher, mask=torch.ones(6, 4))
    with pytest.raises(ValueError, match=r"mask has shape \(5,\).*\(6,\)"):
        loss_fn(student, teacher, mask=torch.ones(5))
    with pytest.raises(ValueError, match=r"student shape \(6, 2, 3\) and teacher shape \(5, \d\)"):
        loss_fn(student, teacher[:5])
    with pytest.raises(ValueError, match=r"must be \(batch, \.\.\.\); got shape \(6,\)"):
        loss_fn(student, teacher[:, 0])


def test_cc_options_are_checked() -> None:
    student, teacher = torch.randn(4, 3), torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"\(4, 3\).*\(4, 5\).*3 != 5.*connector"):
        cc_loss(student, teacher, kernel="bilinear")
    with pytest.raises(ValueError, match="kernel must be 'gaussian_taylor' or 'bilinear'"):
        cc_loss(student, teacher, kernel="rbf")
    with pytest.raises(ValueError, match="gamma must be > 0"):
        cc_loss(student, teacher, gamma=0.0)
    for order in (-1, 1.5):
        with pytest.raises(ValueError, match="order must be an integer >= 0"):
            cc_loss(student, teacher, order=order)
    with pytest.raises(ValueError, match="eps must be > 0"):
        pkt_loss(student, teacher, eps=0.0)


def test_registered_names() -> None:
    expected = {
        "rkd_distance": rkd_distance_loss,
        "rkd_angle": rkd_angle_loss,
        "sp": sp_loss,
        "cc": cc_loss,
        "pkt": pkt_loss,
    }
    for name, fn in expected.items():
        assert get(name) is fn
