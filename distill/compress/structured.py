"""Structured pruning of transformer layers: FFN neurons and attention heads removed for real, so the
model shrinks and runs faster (transformers 5.x has no ``prune_heads``: the projections are sliced here).

Where the parts are: the layer list and each layer's query/key/value projections come from
:func:`~distill.capture.hf_structure.layout_of`; the attention output projection is the Linear beside them
that maps all heads back to the hidden size and the FFN the pair of Linears hidden -> intermediate ->
hidden, found by their names in BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2 and DistilBERT layers.

Importance of a unit (its output contribution, so a unit that contributes nothing scores 0):
  FFN neuron j:  (‖W_in[j]‖ + |b_in[j]|) · ‖W_out[:, j]‖
  head h:        (‖W_v[h]‖ + ‖b_v[h]‖) · ‖W_o[:, h]‖
or first order (``taylor``; Molchanov et al. 2019, group form): Σ_batches |Σ_{w in the unit} w · ∂L/∂w|.
FFN widths stay uniform across layers (the same fraction removed from each), so the result loads with
stock ``transformers`` (``config.intermediate_size``); heads are pruned globally or per layer, and
per-layer head counts are served through ONNX.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distill.capture.hf_structure import layout_of


@dataclass
class LayerParts:
    """The Linear modules of one transformer layer that structured pruning slices."""

    attention: nn.Module  # holds query/key/value
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]
    output: nn.Linear  # all heads -> hidden
    ffn_in: nn.Linear  # hidden -> intermediate
    ffn_out: nn.Linear  # intermediate -> hidden
    head_size: int

    @property
    def heads(self) -> int:
        return self.projections[0].out_features // self.head_size


# (attention output, FFN in, FFN out) inside one layer: BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2; DistilBERT
_LAYER_LINEARS = (
    ("attention.output.dense", "intermediate.dense", "output.dense"),
    ("attention.out_lin", "ffn.lin1", "ffn.lin2"),
)


def layer_parts(model: nn.Module) -> list[LayerParts]:
    """The parts of every layer of a BERT-family model (a ValueError names what is missing)."""
    layout = layout_of(model)
    config = model.config
    hidden = config.hidden_size if hasattr(config, "hidden_size") else config.dim
    head_size = getattr(config, "attention_head_size", None) or hidden // layout.num_heads
    parts = []
    for index in range(layout.num_layers):
        layer = model.get_submodule(layout.layer(index))
        attention = model.get_submodule(layout.attention_of(index))
        projections = tuple(getattr(attention, name) for name in layout.projections)
        names = dict(layer.named_modules())
        found = next((triple for triple in _LAYER_LINEARS if all(n in names for n in triple)), None)
        if found is None:
            raise ValueError(
                f"layer {index} of {type(model).__name__} has none of the attention-output/FFN layouts known "
                "(BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, DistilBERT)"
            )
        output, ffn_in, ffn_out = (names[n] for n in found)
        parts.append(LayerParts(attention, projections, output, ffn_in, ffn_out, head_size))
    return parts


def _bias(linear: nn.Linear, rows: slice | Tensor) -> Tensor:
    return linear.bias[rows] if linear.bias is not None else linear.weight.new_zeros(1)


@torch.no_grad()
def ffn_magnitude(part: LayerParts) -> Tensor:
    w_in, w_out = part.ffn_in.weight, part.ffn_out.weight
    bias = part.ffn_in.bias.abs() if part.ffn_in.bias is not None else 0.0
    return (w_in.norm(dim=1) + bias) * w_out.norm(dim=0)


@torch.no_grad()
def head_magnitude(part: LayerParts) -> Tensor:
    value, output, size = part.projections[2], part.output, part.head_size
    scores = []
    for h in range(part.heads):
        rows = slice(h * size, (h + 1) * size)
        contribution = value.weight[rows].norm() + _bias(value, rows).norm()
        scores.append(contribution * output.weight[:, rows].norm())
    return torch.stack(scores)


def unit_parameters(part: LayerParts, structure: str) -> list[tuple[nn.Parameter, int]]:
    """(parameter, the dimension indexing units) of every parameter a unit of ``structure`` owns."""
    if structure == "ffn":
        owned = [(part.ffn_in.weight, 0), (part.ffn_out.weight, 1)]
        return owned + ([(part.ffn_in.bias, 0)] if part.ffn_in.bias is not None else [])
    owned = [(p.weight, 0) for p in part.projections] + [(part.output.weight, 1)]
    return owned + [(p.bias, 0) for p in part.projections if p.bias is not None]


def grouped_first_order(parts: list[LayerParts], structure: str, losses: Iterable[Tensor]) -> list[Tensor]:
    """Σ_batches |Σ_{w in unit} w · ∂L/∂w| per unit of each layer (heads: units of ``head_size`` rows)."""
    owned = [unit_parameters(part, structure) for part in parts]
    flat = [parameter for layer in owned for parameter, _ in layer]
    totals = [None] * len(parts)
    for loss in losses:
        grads = iter(torch.autograd.grad(loss, flat, allow_unused=True))
        for position, (part, layer) in enumerate(zip(parts, owned, strict=True)):
            units = part.ffn_in.out_features if structure == "ffn" else part.heads
            batch = torch.zeros(units)
            for parameter, dim in layer:
                grad = next(grads)
                if grad is None:
                    continue
                product = (parameter.detach() * grad).movedim(dim, 0).reshape(units, -1)
                batch += product.sum(dim=1).cpu()
            totals[position] = batch.abs() if totals[position] is None else totals[position] + batch.abs()
    return totals


def _keep_rows(linear: nn.Linear, rows: Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[rows].clone())
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, columns].clone())
    linear.in_features = len(columns)


def prune_ffn(model: nn.Module, parts: list[LayerParts], scores: list[Tensor], keep: int) -> None:
    """Keep the ``keep`` highest-scoring FFN neurons of every layer; ``config.intermediate_size`` follows."""
    for part, score in zip(parts, scores, strict=True):
        kept = torch.topk(score, keep).indices.sort().values
        _keep_rows(part.ffn_in, kept)
        _keep_columns(part.ffn_out, kept)
    for name in ("intermediate_size", "hidden_dim"):  # BERT family, DistilBERT
        if hasattr(model.config, name):
            setattr(model.config, name, keep)


def prune_heads(parts: list[LayerParts], kept_heads: list[Tensor]) -> None:
    """Keep the listed heads of each layer (at least one each): slice q/k/v rows and the output columns."""
    for part, heads in zip(parts, kept_heads, strict=True):
        size = part.head_size
        rows = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads.sort().values.tolist()])
        for projection in part.projections:
            _keep_rows(projection, rows)
        _keep_columns(part.output, rows)
        for name in ("num_attention_heads", "n_heads"):
            if hasattr(part.attention, name):
                setattr(part.attention, name, len(heads))
        if hasattr(part.attention, "all_head_size"):
            part.attention.all_head_size = len(rows)


def heads_to_keep(scores: list[Tensor], amount: float, scope: str) -> list[Tensor]:
    """Indices of the heads kept in each layer: the ``amount`` fraction of lowest-scoring heads removed over
    all layers together (``global``) or in each layer (``layer``), never a layer's last head."""
    if scope == "layer":
        return [torch.topk(s, max(1, len(s) - round(amount * len(s)))).indices for s in scores]
    flat = torch.cat(scores)
    remove = round(amount * len(flat))
    order = torch.argsort(flat)  # lowest first
    removed: list[set[int]] = [set() for _ in scores]
    offsets = [0]
    for s in scores:
        offsets.append(offsets[-1] + len(s))
    for position in order.tolist():
        if remove == 0:
            break
        layer = next(i for i in range(len(scores)) if offsets[i] <= position < offsets[i + 1])
        if len(removed[layer]) < len(scores[layer]) - 1:
            removed[layer].add(position - offsets[layer])
            remove -= 1
    return [torch.tensor([h for h in range(len(s)) if h not in removed[i]]) for i, s in enumerate(scores)]
