"""Helpers that make padded positions vanish from a loss.

A mask is 0/1 (or bool) over *positions*: shape ``(batch,)`` for per-example tensors or
``(batch, length)`` for sequences. Losses select the valid positions *before* computing
anything, so a padded value (even inf or NaN) can never reach the result or its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_mask(mask: Tensor, positions_shape: torch.Size, what: str) -> Tensor:
    """Return ``mask`` as bool, or raise naming both shapes when it does not cover the positions."""
    if tuple(mask.shape) != tuple(positions_shape):
        raise ValueError(
            f"{what}: mask has shape {tuple(mask.shape)} but the positions have shape "
            f"{tuple(positions_shape)}; pass a 0/1 mask of shape {tuple(positions_shape)}"
        )
    return mask.bool()


def select_positions(tensor: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """Flatten ``tensor`` of shape ``(*positions, features)`` to ``(valid_positions, features)``."""
    positions_shape = tensor.shape[:-1]
    if mask is None:
        return tensor.reshape(-1, tensor.shape[-1])
    return tensor[check_mask(mask, positions_shape, what)]


def check_same_shape(student: Tensor, teacher: Tensor, what: str) -> None:
    """Raise naming both shapes when student and teacher tensors differ."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}; "
            "add a connector to the match (connector: linear | conv1x1 | mlp) or pick layers of equal size"
        )


def mean_or_zero(values: Tensor, like: Tensor) -> Tensor:
    """Mean of ``values``; zero (still attached to the graph of ``like``) when there are none."""
    if values.numel() == 0:
        return like.sum() * 0.0
    return values.mean()
