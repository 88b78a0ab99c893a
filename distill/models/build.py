"""Build a model from the ``model:`` block of a recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from distill.models.cnn1d import SmallCNN1d
from distill.models.mlp import MLP, SmallCNN


class ModelSpec(BaseModel):
    """Which model to build.

    ``kind: mlp`` uses ``hidden``/``dropout``/``input_dropout``; ``kind: cnn`` (images ``(C, H, W)``)
    uses ``channels``; ``kind: cnn1d`` (signals ``(C, L)`` or ``(L,)``, e.g. MNIST-1D) uses ``channels``
    and ``convs_per_block``.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mlp", "cnn", "cnn1d"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1)
    channels: list[int] = Field(default_factory=lambda: [16, 32])
    convs_per_block: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _convs_per_block_only_for_cnn1d(self) -> ModelSpec:
        # Silently ignoring it would hide a recipe mistake (the user believes they deepened the model).
        if self.convs_per_block != 1 and self.kind != "cnn1d":
            raise ValueError(f"convs_per_block={self.convs_per_block} only applies to kind 'cnn1d', not {self.kind!r}")
        return self


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh, randomly initialised model (seed torch first for a reproducible init)."""
    if spec.kind == "cnn":
        return SmallCNN(input_shape, spec.channels, num_classes)
    if spec.kind == "cnn1d":
        return SmallCNN1d(input_shape, spec.channels, num_classes, convs_per_block=spec.convs_per_block)
    return MLP(input_shape, spec.hidden, num_classes, dropout=spec.dropout, input_dropout=spec.input_dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
