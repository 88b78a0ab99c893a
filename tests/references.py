"""Shared pieces of the loss tests: plain-Python reference helpers and the padding check."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch


def valid_position(mask: torch.Tensor | None, b: int, pos: int) -> bool:
    return mask is None or bool(mask[b, pos])


def softmax_row(row: list[float]) -> list[float]:
    top = max(row)
    exps = [math.exp(z - top) for z in row]
    return [e / sum(exps) for e in exps]


def assert_padding_never_matters(
    loss_fn: Callable[..., torch.Tensor],
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor,
    padded: torch.Tensor,
    junk: float,
) -> None:
    """Junk (huge, infinite, NaN) written where ``padded`` is true changes neither the loss nor the
    gradient of any valid entry, and the padded entries get exactly zero gradient."""
    clean = loss_fn(student, teacher, mask)
    student, teacher = student.clone(), teacher.clone()
    student[padded], teacher[padded] = junk, junk
    student.requires_grad_(True)
    dirty = loss_fn(student, teacher, mask)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)
    dirty.backward()
    assert torch.isfinite(student.grad).all()
    assert torch.equal(student.grad[padded], torch.zeros_like(student.grad[padded]))
