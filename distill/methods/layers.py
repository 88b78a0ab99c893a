"""Small building blocks sized from a feature shape, for vectors, 1-D maps and 2-D maps alike.

Methods adapt their published 2-D convolutional heads to whatever the matched layer produces:
``(B, D)`` vectors get Linear layers, ``(B, C, L)`` maps Conv1d, ``(B, C, H, W)`` maps Conv2d.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def spatial_dims(shape: Sequence[int]) -> int:
    """0 for (B, D) vectors, 1 for (B, C, L) maps, 2 for (B, C, H, W) maps."""
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"expected features (B, D), (B, C, L) or (B, C, H, W), got shape {tuple(shape)}")
    return len(shape) - 2


def conv(in_channels: int, out_channels: int, dims: int, kernel_size: int = 1, bias: bool = True) -> nn.Module:
    """A convolution over ``dims`` spatial dims with 'same' padding; a Linear layer when dims == 0."""
    if dims == 0:
        return nn.Linear(in_channels, out_channels, bias=bias)
    layer = nn.Conv1d if dims == 1 else nn.Conv2d
    return layer(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def conv_transpose(in_channels: int, out_channels: int, dims: int, kernel_size: int = 3) -> nn.Module:
    """The transposed convolution of :func:`conv` (same spatial size); a Linear layer when dims == 0."""
    if dims == 0:
        return nn.Linear(in_channels, out_channels)
    layer = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
    return layer(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def batch_norm(channels: int, dims: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)


def pool_to(features: Tensor, size: Sequence[int]) -> Tensor:
    """Adaptive-average-pool a feature map to the spatial ``size`` (no-op when it already has it)."""
    if features.dim() <= 2 or tuple(features.shape[2:]) == tuple(size):
        return features
    pool = F.adaptive_avg_pool1d if features.dim() == 3 else F.adaptive_avg_pool2d
    return pool(features, tuple(size))
