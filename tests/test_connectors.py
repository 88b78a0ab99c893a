"""Connectors map student features onto the teacher's shape, or explain why they cannot."""

from __future__ import annotations

import pytest
import torch

from distill.core.connectors import CONNECTOR_KINDS, build_connector

CASES = [
    ("linear", (4, 8), (4, 16)),
    ("linear", (4, 5, 8), (4, 5, 16)),
    ("mlp", (4, 8), (4, 16)),
    ("mlp", (4, 5, 8), (4, 5, 3)),
    ("conv1x1", (4, 8, 6, 6), (4, 16, 6, 6)),
    ("conv1x1", (4, 8, 8, 8), (4, 16, 4, 4)),  # spatial sizes differ: pooled to the teacher's
    ("conv1x1", (4, 8, 3, 3), (4, 16, 6, 6)),  # smaller student map
    ("conv1x1", (4, 8, 20), (4, 16, 10)),  # 1-D maps (B, C, L), lengths differ
    ("conv1x1", (4, 8, 10), (4, 16, 10)),
    ("identity", (4, 8), (4, 8)),
    ("identity", (4, 8, 6, 6), (4, 8, 6, 6)),
]


@pytest.mark.parametrize(("kind", "student", "teacher"), CASES)
def test_each_kind_produces_the_teacher_shape(kind, student, teacher) -> None:
    connector = build_connector(kind, student, teacher)
    assert connector(torch.randn(*student)).shape == teacher
    # Built from a probe batch, but must work for any batch size.
    other_batch = (3, *student[1:])
    assert connector(torch.randn(*other_batch)).shape == (3, *teacher[1:])


def test_kinds_constant() -> None:
    assert CONNECTOR_KINDS == ("identity", "linear", "conv1x1", "mlp")


def test_mlp_hidden_width() -> None:
    connector = build_connector("mlp", (2, 8), (2, 4), hidden=32)
    assert connector[0].out_features == 32 and connector[2].in_features == 32
    default = build_connector("mlp", (2, 8), (2, 4))
    assert default[0].out_features == 8


def test_conv1x1_is_conv_plus_batchnorm() -> None:
    connector = build_connector("conv1x1", (2, 8, 4, 4), (2, 16, 4, 4))
    types = [type(m).__name__ for m in connector]
    assert types == ["Conv2d", "BatchNorm2d"]


@pytest.mark.parametrize(
    ("kind", "student", "teacher", "hint"),
    [
        ("identity", (4, 8), (4, 16), "linear"),
        ("linear", (4, 8, 6, 6), (4, 16, 6, 6), "conv1x1"),
        ("mlp", (4, 8, 6, 6), (4, 16, 6, 6), "conv1x1"),
        ("linear", (4, 5, 8), (4, 7, 16), "leading dimensions"),
        ("conv1x1", (4, 8), (4, 16), "linear"),
        ("conv1x1", (4, 8, 10), (4, 16, 6, 6), "same rank"),
        ("linear", (4, 8, 20), (4, 16, 10), "conv1x1"),  # a 3-D (B, C, L) map given to linear
        ("linear", (4,), (4,), "2-D"),
    ],
)
def test_errors_name_both_shapes(kind, student, teacher, hint) -> None:
    with pytest.raises(ValueError) as info:
        build_connector(kind, student, teacher)
    message = str(info.value)
    assert str(student) in message and str(teacher) in message
    assert hint in message


def test_identity_mismatch_suggests_alternatives() -> None:
    with pytest.raises(ValueError, match="identity") as info:
        build_connector("identity", (2, 4, 4, 4), (2, 8, 4, 4))
    assert "conv1x1" in str(info.value) and "(2, 4, 4, 4)" in str(info.value)


def test_unknown_kind_suggests_closest() -> None:
    with pytest.raises(ValueError, match=r"unknown connector 'linaer'.*did you mean 'linear'\?"):
        build_connector("linaer", (2, 4), (2, 8))


def test_hidden_rejected_for_other_kinds() -> None:
    with pytest.raises(ValueError, match="only applies to connector 'mlp'"):
        build_connector("linear", (2, 4), (2, 8), hidden=16)


@pytest.mark.parametrize(("kind", "student", "teacher"), [c for c in CASES if c[0] != "identity"])
def test_gradients_reach_connector_parameters(kind, student, teacher) -> None:
    connector = build_connector(kind, student, teacher)
    connector(torch.randn(*student)).pow(2).mean().backward()
    params = list(connector.parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_conv1x1_on_1d_maps_pools_then_convs() -> None:
    connector = build_connector("conv1x1", (2, 8, 20), (2, 16, 10))
    assert [type(m).__name__ for m in connector] == ["AdaptiveAvgPool1d", "Conv1d", "BatchNorm1d"]
    student = torch.randn(2, 8, 20, requires_grad=True)
    out = connector(student)
    assert out.shape == (2, 16, 10)
    out.pow(2).mean().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    same_length = build_connector("conv1x1", (2, 8, 10), (2, 16, 10))
    assert [type(m).__name__ for m in same_length] == ["Conv1d", "BatchNorm1d"]


def test_linear_reads_3d_features_as_sequences() -> None:
    # (B, L, D): only D is mapped, for every position, whatever the connector conv1x1 would do.
    connector = build_connector("linear", (2, 20, 8), (2, 20, 16))
    features = torch.randn(2, 20, 8)
    out = connector(features)
    assert out.shape == (2, 20, 16)
    assert torch.allclose(out[:, 3], connector(features[:, 3]))
