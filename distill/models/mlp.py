"""Feed-forward students and teachers with readable layer names (``fc1``, ``relu1``, ``head``).

The 1-D CNN for sequence signals lives in ``cnn1d.py``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

from pydantic import Field
from torch import nn

from distill.models.registry import ModelContext, ModelSpec, register_model
from distill.sections import Size


class MLP(nn.Sequential):
    """Flatten → [Dropout] → (Linear → ReLU → [Dropout]) × len(hidden) → Linear head.

    Layers are named ``flatten``, ``input_dropout``, ``fc{i}``, ``relu{i}``, ``dropout{i}``, ``head``
    so a feature match can say ``student: relu2``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        hidden: Sequence[int],
        num_classes: int,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if input_dropout:
            layers["input_dropout"] = nn.Dropout(input_dropout)
        width = math.prod(input_shape)
        for number, size in enumerate(hidden, start=1):
            layers[f"fc{number}"] = nn.Linear(width, size)
            layers[f"relu{number}"] = nn.ReLU()
            if dropout:
                layers[f"dropout{number}"] = nn.Dropout(dropout)
            width = size
        layers["head"] = nn.Linear(width, num_classes)
        super().__init__(layers)


class SmallCNN(nn.Sequential):
    """(Conv3x3 → BatchNorm → ReLU → MaxPool2) per entry of ``channels`` → global average pool → Linear head.

    Module names (for feature matches and hooks):

    * ``block{i}`` — one per entry of ``channels`` (with ``conv``, ``bn``, ``relu``, ``pool`` inside), so
      feature maps ``(B, C, H, W)`` are addressed as ``block2`` or ``block2.relu``.
    * ``pool`` — ``AdaptiveAvgPool2d(1)``, output ``(B, C, 1, 1)``.
    * ``flatten`` — the penultimate embedding ``(B, C)`` (what relation/contrastive methods use).
    * ``head`` — the classifier, logits ``(B, num_classes)``.
    """

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int], num_classes: int) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        in_channels = input_shape[0]
        for number, out_channels in enumerate(channels, start=1):
            layers[f"block{number}"] = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                    bn=nn.BatchNorm2d(out_channels),
                    relu=nn.ReLU(),
                    pool=nn.MaxPool2d(2, ceil_mode=True),
                )
            )
            in_channels = out_channels
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(in_channels, num_classes)
        super().__init__(layers)


@register_model("mlp")
class MLPSpec(ModelSpec):
    """``kind: mlp``: :class:`MLP` with ``hidden`` widths, ``dropout`` after each hidden layer and
    ``input_dropout`` on the inputs."""

    kind: Literal["mlp"] = "mlp"
    hidden: list[Size] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1)

    def build(self, context: ModelContext) -> nn.Module:
        shape = context.tensor_shape(self.kind)
        return MLP(shape, self.hidden, context.num_classes, dropout=self.dropout, input_dropout=self.input_dropout)


@register_model("cnn")
class CNNSpec(ModelSpec):
    """``kind: cnn``: :class:`SmallCNN` for images ``(C, H, W)``, one block per entry of ``channels``."""

    kind: Literal["cnn"] = "cnn"
    channels: list[Size] = Field(default_factory=lambda: [16, 32], min_length=1)

    def build(self, context: ModelContext) -> nn.Module:
        return SmallCNN(context.tensor_shape(self.kind), self.channels, context.num_classes)
