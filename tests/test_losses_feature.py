"""Feature losses against hand-written numpy references; FSP on masked sequence features at the end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from distill.losses import cosine_loss, fsp_loss, hidden_mse_loss, hint_loss

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


# ----------------------------------------------------------------- FSP on sequences (B, L, D) with a mask


def _fsp_sequence_reference(student_layers, teacher_layers, mask) -> float:
    """FSP of (B, L, D) layers: G[b] = Σ over valid l of f1[b, l] f2[b, l]ᵀ / n_b; examples with n_b = 0 dropped."""
    examples = [b for b in range(mask.shape[0]) if mask[b].sum() > 0]
    total = 0.0
    for i in range(len(student_layers) - 1):
        squares = []
        for b in examples:
            positions = [pos for pos in range(mask.shape[1]) if mask[b, pos]]
            grams = []
            for layers in (student_layers, teacher_layers):
                f1, f2 = layers[i][b].tolist(), layers[i + 1][b].tolist()
                grams.append(
                    [
                        [
                            sum(f1[pos][c1] * f2[pos][c2] for pos in positions) / len(positions)
                            for c2 in range(len(f2[0]))
                        ]
                        for c1 in range(len(f1[0]))
                    ]
                )
            squares += [(x - y) ** 2 for rs, rt in zip(*grams, strict=True) for x, y in zip(rs, rt, strict=True)]
        total += sum(squares) / len(squares)
    return total


SEQ_MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])  # the last example is all padding


def _sequences(*dims: int) -> list[torch.Tensor]:
    return [torch.randn(3, 4, d, dtype=torch.float64) for d in dims]


def test_fsp_sequences_with_mask_match_reference() -> None:
    student, teacher = _sequences(2, 3, 2), _sequences(2, 3, 2)
    expected = _fsp_sequence_reference(student, teacher, SEQ_MASK)
    assert fsp_loss(student, teacher, mask=SEQ_MASK).item() == pytest.approx(expected, rel=1e-10)


def test_fsp_sequence_by_hand() -> None:
    # One example, positions 0 and 1 valid: G = (f1(0) f2(0)ᵀ + f1(1) f2(1)ᵀ) / 2.
    student = [torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]]), torch.tensor([[[1.0], [2.0], [9.0]]])]
    teacher = [torch.tensor([[[0.0, 1.0], [1.0, 0.0], [9.0, 9.0]]]), torch.tensor([[[2.0], [4.0], [9.0]]])]
    g_s = [(1 * 1 + 3 * 2) / 2, (2 * 1 + 4 * 2) / 2]  # 3.5, 5
    g_t = [(0 * 2 + 1 * 4) / 2, (1 * 2 + 0 * 4) / 2]  # 2, 1
    expected = ((g_s[0] - g_t[0]) ** 2 + (g_s[1] - g_t[1]) ** 2) / 2
    assert fsp_loss(student, teacher, mask=torch.tensor([[1, 1, 0]])).item() == pytest.approx(expected)


def test_fsp_with_an_all_ones_mask_is_the_map_fsp_of_the_transposed_sequences() -> None:
    student, teacher = _sequences(2, 3), _sequences(2, 3)
    as_maps = fsp_loss([x.transpose(1, 2) for x in student], [x.transpose(1, 2) for x in teacher])
    assert fsp_loss(student, teacher, mask=torch.ones(3, 4)).item() == pytest.approx(as_maps.item(), rel=1e-12)


@pytest.mark.parametrize("junk", [1e30, float("inf"), float("nan")])
def test_fsp_padded_positions_never_matter(junk: float) -> None:
    student, teacher = _sequences(2, 3, 2), _sequences(2, 3, 2)
    clean = fsp_loss(student, teacher, mask=SEQ_MASK)
    padded = SEQ_MASK == 0
    for layer in (*student, *teacher):
        layer[padded] = junk
    student = [layer.requires_grad_(True) for layer in student]
    dirty = fsp_loss(student, teacher, mask=SEQ_MASK)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    for layer in student:
        assert torch.isfinite(layer.grad).all() and torch.equal(
            layer.grad[padded], torch.zeros_like(layer.grad[padded])
        )
    all_padded = fsp_loss(student, teacher, mask=torch.zeros(3, 4))
    assert all_padded.item() == 0.0 and all_padded.requires_grad


def test_gradcheck_fsp_sequences() -> None:
    tensors = [layer.requires_grad_(True) for layer in _sequences(2, 3, 2) * 2]
    assert torch.autograd.gradcheck(lambda *xs: fsp_loss(list(xs[:3]), list(xs[3:]), SEQ_MASK), tuple(tensors))


def test_fsp_sequence_errors() -> None:
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match=r"fsp student layer 0: mask has shape \(2, 4\).*\(2, 3\)"):
        fsp_loss([x, y], [x, y], mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"layer 1 .* different hidden sizes; put a linear connector"):
        fsp_loss([x, y], [x, x], mask=torch.ones(2, 3))
