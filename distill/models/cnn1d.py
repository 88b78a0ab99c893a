"""A small 1-D CNN for sequence signals such as MNIST-1D (one channel of length 40)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from pydantic import Field
from torch import Tensor, nn

from distill.models.registry import ModelContext, ModelSpec, register_model
from distill.sections import Size


def _conv_block(in_channels: int, out_channels: int, convs: int, pool: bool) -> nn.Sequential:
    """``conv, bn, relu[, conv2, bn2, relu2, ...][, pool]`` — names a feature match can address."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for index in range(1, convs + 1):
        suffix = "" if index == 1 else str(index)
        # bias=False: the BatchNorm that follows has its own shift.
        layers[f"conv{suffix}"] = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        layers[f"bn{suffix}"] = nn.BatchNorm1d(out_channels)
        layers[f"relu{suffix}"] = nn.ReLU()
        in_channels = out_channels
    if pool:
        layers["pool"] = nn.MaxPool1d(2, ceil_mode=True)
    return nn.Sequential(layers)


class SmallCNN1d(nn.Sequential):
    """(Conv1d k=3 → BatchNorm1d → ReLU) × ``convs_per_block`` → MaxPool1d(2), per entry of ``channels``,
    then global average pool → flatten → Linear head.

    Module names (for feature matches and hooks):

    * ``block{i}`` — one per entry of ``channels``, output ``(B, channels[i-1], L_i)``; inside it
      ``conv``, ``bn``, ``relu`` (then ``conv2``, ``bn2``, ``relu2``, ... when ``convs_per_block > 1``)
      and ``pool`` (absent from blocks past ``pool_blocks``).
    * ``pool`` — ``AdaptiveAvgPool1d(1)``, output ``(B, C, 1)``.
    * ``flatten`` — the penultimate embedding ``(B, C)`` (what relation/contrastive methods use).
    * ``head`` — the classifier, logits ``(B, num_classes)``.

    ``input_shape`` is ``(C, L)`` or ``(L,)``; a ``(B, L)`` batch is read as one channel,
    ``(B, 1, L)``. ``pool_blocks`` is how many leading blocks end with a MaxPool1d(2) (default: all);
    pooling uses ``ceil_mode`` so an odd length never drops its last position.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        channels: Sequence[int],
        num_classes: int,
        convs_per_block: int = 1,
        pool_blocks: int | None = None,
    ) -> None:
        if len(input_shape) not in (1, 2):
            raise ValueError(
                f"SmallCNN1d needs an input shape (C, L) or (L,), got {tuple(input_shape)}; "
                "use kind 'cnn' for images (C, H, W) or 'mlp' for flat features"
            )
        if convs_per_block < 1:
            raise ValueError(f"convs_per_block must be at least 1, got {convs_per_block}")
        pooled = len(channels) if pool_blocks is None else pool_blocks
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = input_shape[0] if len(input_shape) == 2 else 1
        for number, out_channels in enumerate(channels, start=1):
            layers[f"block{number}"] = _conv_block(in_channels, out_channels, convs_per_block, number <= pooled)
            in_channels = out_channels
        layers["pool"] = nn.AdaptiveAvgPool1d(1)
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(in_channels, num_classes)
        super().__init__(layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:  # (B, L): one channel
            x = x.unsqueeze(1)
        return super().forward(x)


@register_model("cnn1d")
class CNN1dSpec(ModelSpec):
    """``kind: cnn1d``: :class:`SmallCNN1d` for signals ``(C, L)`` or ``(L,)`` (e.g. MNIST-1D)."""

    kind: Literal["cnn1d"] = "cnn1d"
    channels: list[Size] = Field(default_factory=lambda: [16, 32], min_length=1)
    convs_per_block: int = Field(1, ge=1)

    def build(self, context: ModelContext) -> nn.Module:
        return SmallCNN1d(context.tensor_shape(self.kind), self.channels, context.num_classes, self.convs_per_block)
