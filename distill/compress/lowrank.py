"""Low-rank factorisation (``- {low_rank: {energy: 0.9}}``): each Linear weight W (out x in) becomes two
thin layers through its truncated SVD, W ≈ (U_r Σ_r)(V_rᵀ): ``Linear(in, r, bias=False)`` then
``Linear(r, out)``, the original bias on the second (Denton et al. 2014; Jaderberg et al. 2014). The
rank is ``rank`` or, with ``energy``, the smallest r whose singular values keep that fraction of Σσ²;
a layer is factorised only when r (in + out) < in · out, i.e. when it saves parameters. 1x1 convolutions
are factorised the same way. ``embeddings: true`` also factorises the input embedding matrix (V x d ->
V x r and r x d; ALBERT's factorised embedding), where most of a small transformer's parameters are.
Follow with a ``distill`` step to recover; at full rank the layer is reproduced exactly (up to float
rounding). A factorised transformer is served through ONNX (stock transformers has no such layers).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.masks import is_skipped


def chosen_rank(singular: Tensor, rank: int | None, energy: float | None) -> int:
    """``rank`` (capped at the full rank), or the smallest rank keeping ``energy`` of Σσ²."""
    if rank is not None:
        return min(rank, len(singular))
    kept = torch.cumsum(singular.pow(2), 0) / singular.pow(2).sum()
    return int(torch.searchsorted(kept, torch.tensor(energy - 1e-9)).item()) + 1


def _factors(weight: Tensor, rank: int | None, energy: float | None) -> tuple[Tensor, Tensor] | None:
    """(A: r x in, B: out x r) with B A the rank-r approximation of ``weight``, or None when no saving."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    r = chosen_rank(s, rank, energy)
    out_features, in_features = weight.shape
    if r * (in_features + out_features) >= in_features * out_features:
        return None
    return vh[:r].to(weight.dtype), (u[:, :r] * s[:r]).to(weight.dtype)


class FactorisedLinear(nn.Sequential):
    """x -> second(first(x)): a Linear split in two thin ones."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__(first, second)


class FactorisedEmbedding(nn.Module):
    """An embedding V x d as V x r lookups followed by an r x d projection (ALBERT)."""

    def __init__(self, table: nn.Embedding, projection: nn.Linear) -> None:
        super().__init__()
        self.table, self.projection = table, projection
        self.embedding_dim = projection.out_features

    @property
    def weight(self) -> Tensor:  # what code that ties or inspects input embeddings reads
        return self.projection(self.table.weight)

    def forward(self, ids: Tensor) -> Tensor:
        return self.projection(self.table(ids))


@torch.no_grad()
def factorise_linear(linear: nn.Linear, rank: int | None, energy: float | None) -> nn.Module:
    found = _factors(linear.weight, rank, energy)
    if found is None:
        return linear
    first_weight, second_weight = found
    first = nn.Linear(linear.in_features, len(first_weight), bias=False)
    second = nn.Linear(len(first_weight), linear.out_features, bias=linear.bias is not None)
    first.weight.copy_(first_weight)
    second.weight.copy_(second_weight)
    if linear.bias is not None:
        second.bias.copy_(linear.bias)
    return FactorisedLinear(first, second)


@torch.no_grad()
def factorise_conv1x1(conv: nn.Conv1d | nn.Conv2d, rank: int | None, energy: float | None) -> nn.Module:
    found = _factors(conv.weight.flatten(1), rank, energy)
    if found is None:
        return conv
    first_weight, second_weight = found
    kind = type(conv)
    first = kind(conv.in_channels, len(first_weight), 1, bias=False)
    second = kind(len(first_weight), conv.out_channels, 1, bias=conv.bias is not None)
    first.weight.copy_(first_weight.view_as(first.weight))
    second.weight.copy_(second_weight.view_as(second.weight))
    if conv.bias is not None:
        second.bias.copy_(conv.bias)
    return FactorisedLinear(first, second)


@torch.no_grad()
def factorise_embedding(embedding: nn.Embedding, rank: int | None, energy: float | None) -> nn.Module:
    found = _factors(embedding.weight, rank, energy)  # V x d = (V x r)(r x d)
    if found is None:
        return embedding
    right, left = found  # right: r x d, left: V x r
    table = nn.Embedding(embedding.num_embeddings, len(right), padding_idx=embedding.padding_idx)
    table.weight.copy_(left)
    projection = nn.Linear(len(right), embedding.embedding_dim, bias=False)
    projection.weight.copy_(right.T)
    return FactorisedEmbedding(table, projection)


def _is_1x1(module: nn.Module) -> bool:
    return isinstance(module, (nn.Conv1d, nn.Conv2d)) and all(k == 1 for k in module.kernel_size) and module.groups == 1


@register_step("low_rank")
class LowRank(CompressStep):
    kind: Literal["low_rank"] = "low_rank"
    rank: int | None = Field(None, ge=1)
    energy: float | None = Field(None, gt=0, le=1)  # keep this fraction of Σσ² in each layer
    embeddings: bool = False  # also the input embedding matrix (ALBERT's factorised embedding)
    skip: list[str] = Field(default_factory=list)  # module names left whole, e.g. [classifier]

    @model_validator(mode="after")
    def _one_of(self) -> LowRank:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give one of rank (a number) or energy (the fraction of Σσ² kept, e.g. 0.9)")
        return self

    def label(self) -> str:
        what = f"rank {self.rank}" if self.rank is not None else f"{100 * self.energy:g}% energy"
        return f"low rank ({what}{', embeddings' if self.embeddings else ''})"

    def apply(self, state: CompressState, index: int) -> None:
        model = state.require_torch(self.kind)
        state.require_unshared("low_rank")
        state.keep_before()
        for name, module in list(model.named_modules()):
            if not name or is_skipped(name, self.skip):
                continue
            if isinstance(module, nn.Linear):
                replacement = factorise_linear(module, self.rank, self.energy)
            elif _is_1x1(module):
                replacement = factorise_conv1x1(module, self.rank, self.energy)
            else:
                continue
            if replacement is not module:
                model.set_submodule(name, replacement)
        if self.embeddings:
            if not hasattr(model, "get_input_embeddings"):
                raise ValueError("compress low_rank: embeddings: true needs a transformer with input embeddings")
            model.set_input_embeddings(factorise_embedding(model.get_input_embeddings(), self.rank, self.energy))
        state.custom_layers = True  # no transformers config describes these layers
