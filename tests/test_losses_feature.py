"""Feature losses against hand-written numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distill.losses import cosine_loss, hidden_mse_loss, hint_loss

MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])


def _pair(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape, dtype=torch.float64), torch.randn(*shape, dtype=torch.float64)


def _valid_rows(tensor: torch.Tensor, mask: torch.Tensor | None) -> list[np.ndarray]:
    """Rows of the last dim at valid positions; a 4-D map is one row per example."""
    array = tensor.detach().numpy()
    if array.ndim == 4:
        array = array.reshape(array.shape[0], -1)
    if array.ndim == 2:
        return [array[b] for b in range(array.shape[0]) if mask is None or mask[b]]
    return [
        array[b, pos] for b in range(array.shape[0]) for pos in range(array.shape[1]) if mask is None or mask[b, pos]
    ]


def _mse_reference(student, teacher, mask=None) -> float:
    total, count = 0.0, 0
    for s_row, t_row in zip(_valid_rows(student, mask), _valid_rows(teacher, mask), strict=True):
        for s, t in zip(s_row, t_row, strict=True):
            total += (s - t) ** 2
            count += 1
    return total / count


def _cosine_reference(student, teacher, mask=None) -> float:
    losses = []
    for s_row, t_row in zip(_valid_rows(student, mask), _valid_rows(teacher, mask), strict=True):
        dot = sum(s * t for s, t in zip(s_row, t_row, strict=True))
        norms = math.sqrt(sum(s * s for s in s_row)) * math.sqrt(sum(t * t for t in t_row))
        losses.append(1.0 - dot / norms)
    return sum(losses) / len(losses)


# ----------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("shape", "mask"),
    [((3, 5), None), ((2, 3), torch.tensor([1, 0])), ((2, 4, 3), None), ((2, 4, 3), MASK), ((2, 3, 4, 4), None)],
)
def test_hidden_mse_and_cosine_match_reference(shape, mask) -> None:
    student, teacher = _pair(*shape)
    assert hidden_mse_loss(student, teacher, mask).item() == pytest.approx(
        _mse_reference(student, teacher, mask), rel=1e-10
    )
    assert cosine_loss(student, teacher, mask).item() == pytest.approx(
        _cosine_reference(student, teacher, mask), rel=1e-10
    )


def test_hidden_mse_by_hand() -> None:
    student = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    teacher = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert hidden_mse_loss(student, teacher).item() == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert hidden_mse_loss(student, teacher, mask=torch.tensor([1, 0])).item() == pytest.approx(0.5)


def test_cosine_by_hand() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    teacher = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    # orthogonal -> 1, parallel -> 0
    assert cosine_loss(student, teacher).item() == pytest.approx(0.5)
    assert cosine_loss(student, teacher, mask=torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-7)


def test_cosine_flattens_feature_maps_per_example() -> None:
    student, teacher = _pair(2, 3, 2, 2)
    flat = cosine_loss(student.reshape(2, -1), teacher.reshape(2, -1))
    assert cosine_loss(student, teacher).item() == pytest.approx(flat.item(), rel=1e-12)


def test_hint_with_a_linear_connector_matches_reference() -> None:
    connector = nn.Linear(3, 5).double()
    student = torch.randn(2, 4, 3, dtype=torch.float64)
    teacher = torch.randn(2, 4, 5, dtype=torch.float64)
    weight, bias = connector.weight.detach().numpy(), connector.bias.detach().numpy()
    total, count = 0.0, 0
    for b in range(2):
        for pos in range(4):
            if not MASK[b, pos]:
                continue
            regressed = [sum(weight[o, i] * float(student[b, pos, i]) for i in range(3)) + bias[o] for o in range(5)]
            for o in range(5):
                total += (regressed[o] - float(teacher[b, pos, o])) ** 2
                count += 1
    assert hint_loss(student, teacher, connector, MASK).item() == pytest.approx(total / count, rel=1e-10)


def test_hint_without_connector_is_hidden_mse() -> None:
    student, teacher = _pair(2, 4, 3)
    assert hint_loss(student, teacher, mask=MASK).item() == hidden_mse_loss(student, teacher, MASK).item()


def test_hint_connector_gets_gradients() -> None:
    connector = nn.Linear(3, 5)
    hint_loss(torch.randn(2, 4, 3), torch.randn(2, 4, 5), connector, MASK).backward()
    assert connector.weight.grad is not None and connector.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------- masking and gradients

LOSSES = {
    "hidden_mse": hidden_mse_loss,
    "cosine": cosine_loss,
    "hint": lambda s, t, mask: hint_loss(s, t, None, mask),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("junk", [1e30, float("inf"), float("-inf"), float("nan")])
def test_padded_positions_never_matter(name: str, junk: float) -> None:
    student, teacher = _pair(2, 4, 3)
    clean = LOSSES[name](student, teacher, MASK)
    padded = MASK == 0
    student, teacher = student.clone(), teacher.clone()
    student[padded], teacher[padded] = junk, junk
    student.requires_grad_(True)
    dirty = LOSSES[name](student, teacher, MASK)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    assert torch.isfinite(student.grad).all()
    assert torch.equal(student.grad[padded], torch.zeros_like(student.grad[padded]))


@pytest.mark.parametrize("junk", [float("inf"), float("nan")])
def test_padding_never_reaches_the_connector_gradient(junk: float) -> None:
    connector = nn.Linear(3, 5).double()
    student, teacher = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    clean = hint_loss(student, teacher, connector, MASK)
    student[MASK == 0] = junk
    dirty = hint_loss(student, teacher, connector, MASK)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    assert torch.isfinite(connector.weight.grad).all() and torch.isfinite(connector.bias.grad).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize(("shape", "mask"), [((2, 4, 3), MASK), ((3, 4), None), ((2, 2, 2, 2), None)])
def test_gradcheck(name: str, shape, mask) -> None:
    student, teacher = (x.requires_grad_(True) for x in _pair(*shape))
    assert torch.autograd.gradcheck(lambda s, t: LOSSES[name](s, t, mask), (student, teacher))


def test_gradcheck_hint_with_connector() -> None:
    connector = nn.Linear(3, 2).double()
    student = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 4, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: hint_loss(s, teacher, connector, MASK), (student,))


def test_all_masked_is_zero_with_grad() -> None:
    student = torch.randn(2, 4, 3, requires_grad=True)
    for loss_fn in LOSSES.values():
        loss = loss_fn(student, torch.randn(2, 4, 3), torch.zeros(2, 4))
        assert loss.item() == 0.0
        loss.backward()


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_shape_mismatch_names_both_shapes(name: str) -> None:
    with pytest.raises(ValueError, match=r"\(2, 4, 3\).*\(2, 4, 6\).*connector"):
        LOSSES[name](torch.randn(2, 4, 3), torch.randn(2, 4, 6), None)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\).*\(2, 4\)"):
        LOSSES[name](torch.randn(2, 4, 3), torch.randn(2, 4, 3), torch.ones(2, 3))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_feature_maps_reject_a_sequence_mask(name: str) -> None:
    maps = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="attention_mse"):
        LOSSES[name](maps, maps.clone(), torch.ones(2, 4))


def test_unsupported_rank() -> None:
    with pytest.raises(ValueError, match=r"got shape \(4,\)"):
        hidden_mse_loss(torch.randn(4), torch.randn(4))
