"""``distill inspect``'s table: a model's named layers with their output shapes on a real sample (the names
feature matches use)."""

from __future__ import annotations

import torch
from rich.table import Table

from distill.capture import Capture, is_transformer, layout_of, module_names, open_capture
from distill.core.batch import call_model


def layer_table(model: torch.nn.Module, inputs: object, title: str) -> Table:
    """Name, type, output shape and parameters of every layer: dotted module names, or for a transformer the
    HF layer names (``hidden:K``, ``attention:K``, ... ``logits``)."""
    table = Table(title=title)
    for column in ("name", "type", "output shape", "parameters"):
        table.add_column(column)
    if is_transformer(model):
        _transformer_rows(table, model, inputs)
    else:
        _module_rows(table, model, inputs)
    return table


def _shape(value: object) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _module_rows(table: Table, model: torch.nn.Module, inputs: object) -> None:
    names = module_names(model)
    with torch.no_grad(), Capture(model, names, detach=True) as captured:
        call_model(model, inputs)
    for name in names:
        module = model.get_submodule(name)
        shape = _shape(captured.records[name]) if name in captured.records else "(not called)"
        table.add_row(name, type(module).__name__, shape, f"{sum(p.numel() for p in module.parameters()):,}")


def _transformer_rows(table: Table, model: torch.nn.Module, inputs: object) -> None:
    """The layer names feature matches use (``hidden:K`` ... ``logits``) with their shapes on the sample."""
    layout = layout_of(model)
    count = layout.num_layers
    names = [f"hidden:{k}" for k in range(count + 1)]
    names += [f"{kind}:{k}" for kind in ("attention", "scores", "values") for k in range(count)]
    names.append("logits")
    with torch.no_grad(), open_capture(model, names, detach=True) as captured:
        call_model(model, inputs)
    for name in names:
        kind, _, index = name.partition(":")
        module = None  # whose parameters a row shows: a hidden state's layer (or embeddings), the head
        if kind == "hidden":
            module = layout.embeddings if index == "0" else layout.layer(int(index) - 1)
        elif kind == "logits":
            module = layout.head
        size = sum(p.numel() for p in model.get_submodule(module).parameters()) if module else 0
        table.add_row(name, kind, _shape(captured[name]), f"{size:,}" if kind in ("hidden", "logits") else "")
