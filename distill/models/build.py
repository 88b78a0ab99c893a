"""Build a model from the ``model:`` block of a recipe."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from distill.models.cnn1d import SmallCNN1d
from distill.models.mlp import MLP, SmallCNN
from distill.models.soft_tree import SoftDecisionTree


class ModelSpec(BaseModel):
    """Which model to build.

    ``kind: mlp`` uses ``hidden``/``dropout``/``input_dropout``; ``kind: cnn`` (images ``(C, H, W)``)
    uses ``channels``; ``kind: cnn1d`` (signals ``(C, L)`` or ``(L,)``, e.g. MNIST-1D) uses ``channels``
    and ``convs_per_block``. ``kind: hf`` is a Hugging Face transformer for the text datasets: a teacher
    is loaded from ``path`` (a local folder, or ``minilm`` for the packaged all-MiniLM-L6-v2); a student
    is the teacher shrunk to ``layers`` layers, its layers picked by ``layer_map`` (skip | uniform | last
    | a list of teacher layers) and initialised from them (``init: teacher``) or at random. ``kind: tree``
    is a soft decision tree (Frosst & Hinton 2017) of ``depth`` levels with inverse temperature
    ``inverse_temperature`` and routing penalty ``penalty_strength`` (decayed by ``penalty_decay`` per level).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["mlp", "cnn", "cnn1d", "hf", "tree"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [128])
    dropout: float = Field(0.0, ge=0, lt=1)
    input_dropout: float = Field(0.0, ge=0, lt=1)
    channels: list[int] = Field(default_factory=lambda: [16, 32])
    convs_per_block: int = Field(1, ge=1)
    path: str = "minilm"  # hf teacher: local model folder
    layers: int | None = Field(None, ge=1)  # hf student: number of layers
    layer_map: Literal["skip", "uniform", "last"] | list[int] = "uniform"  # hf student: which teacher layers
    init: Literal["teacher", "random"] = "teacher"  # hf student: copy the mapped teacher weights, or random
    trust_remote_code: bool = False  # hf: only when the user asks for it
    depth: int = Field(8, ge=1, le=12)  # tree: levels of inner nodes (2^depth leaves)
    inverse_temperature: float = Field(1.0, gt=0)  # tree: beta in sigmoid(beta (x.w + b))
    penalty_strength: float = Field(0.1, ge=0)  # tree: lambda of the balanced-split penalty at the root
    penalty_decay: float = Field(0.5, gt=0, le=1)  # tree: the penalty shrinks by this factor per level

    @model_validator(mode="after")
    def _convs_per_block_only_for_cnn1d(self) -> ModelSpec:
        # Silently ignoring it would hide a recipe mistake (the user believes they deepened the model).
        if self.convs_per_block != 1 and self.kind != "cnn1d":
            raise ValueError(f"convs_per_block={self.convs_per_block} only applies to kind 'cnn1d', not {self.kind!r}")
        return self


def build_model(spec: ModelSpec, input_shape: Sequence[int], num_classes: int) -> nn.Module:
    """A fresh, randomly initialised model (seed torch first for a reproducible init)."""
    if spec.kind == "hf":
        raise ValueError("kind 'hf' models are built by distill.hf.pipeline for the text datasets (sst2, conll2003)")
    if spec.kind == "tree":
        return SoftDecisionTree(
            input_shape, num_classes, spec.depth, spec.inverse_temperature, spec.penalty_strength, spec.penalty_decay
        )
    if spec.kind == "cnn":
        return SmallCNN(input_shape, spec.channels, num_classes)
    if spec.kind == "cnn1d":
        return SmallCNN1d(input_shape, spec.channels, num_classes, convs_per_block=spec.convs_per_block)
    return MLP(input_shape, spec.hidden, num_classes, dropout=spec.dropout, input_dropout=spec.input_dropout)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
