"""Build a model from the ``model:`` block of a recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from distill.models.mlp import MLP, SmallCNN


class ModelSpec(BaseModel):
    """``kind: mlp`` uses ``hidden``/``dropout``/``input_dropout``; ``kind: cnn`` uses ``channels``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mlp", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1)
    channels: list[int] = Field(default_factory=lambda: [16, 32])


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh, randomly initialised model (seed torch first for a reproducible init)."""
    if spec.kind == "cnn":
        return SmallCNN(input_shape, spec.channels, num_classes)
    return MLP(input_shape, spec.hidden, num_classes, dropout=spec.dropout, input_dropout=spec.input_dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
