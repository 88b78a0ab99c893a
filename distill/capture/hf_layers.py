"""Name a transformer's layers by index: ``hidden:K``, ``attention:K``, ``scores:K``, ``values:K``, ``logits``.

* ``hidden:K`` — ``outputs.hidden_states[K]``: 0 is the embedding output, K the output of layer K.
* ``attention:K`` — ``outputs.attentions[K]``: layer K's attention *probabilities* (0-based), shape
  (B, heads, L, L). Needs ``attn_implementation="eager"``: fused kernels never materialise them.
* ``scores:K`` — layer K's pre-softmax scores ``Q Kᵀ / sqrt(d_head)`` (TinyBERT's attention target),
  recomputed from the query/key projections, so without the additive padding mask (losses mask).
* ``values:K`` — layer K's value vectors, (B, heads, L, d_head) (MiniLM's value relation).
* ``logits`` — the task head's output.

Negative K counts from the end (``attention:-1`` is the last layer). :class:`LayerCapture` records
them with forward hooks, like :class:`distill.capture.Capture`, and removes every hook on exit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from distill.capture.hf_structure import EncoderLayout, is_transformer, layout_of
from distill.capture.hooks import Capture, resolve_module

_VIRTUAL = re.compile(r"^(hidden|attention|scores|values):(-?\d+)$")
KINDS = ("hidden", "attention", "scores", "values")


def is_layer_index_name(name: str) -> bool:
    """Whether ``name`` addresses a layer by index (``hidden:3``, ``logits``) rather than by module name."""
    return bool(_VIRTUAL.match(name)) or name == "logits"


@dataclass(frozen=True)
class _Source:
    module: str
    element: int  # which element of a tuple output (0 also for a plain tensor output)


def _index(kind: str, raw: int, layout: EncoderLayout, name: str) -> int:
    count = layout.num_layers + 1 if kind == "hidden" else layout.num_layers
    index = raw + count if raw < 0 else raw
    if not 0 <= index < count:
        first = "0 = embeddings, " if kind == "hidden" else ""
        raise ValueError(
            f"layer {name!r} is out of range: this model has {layout.num_layers} layers, so {kind}:K takes "
            f"K in 0..{count - 1} ({first}negative counts from the end)"
        )
    return index


def _plan(layout: EncoderLayout, name: str) -> tuple[list[_Source], Callable[[list[Any]], Tensor]]:
    """The hooked outputs a layer name needs and how to turn them into the tensor."""
    if name == "logits":
        if layout.head is None:
            raise ValueError("'logits' needs a task head named 'classifier'; this model has none")
        return [_Source(layout.head, 0)], lambda values: values[0]
    match = _VIRTUAL.match(name)
    if match is None:
        return [_Source(name, 0)], lambda values: values[0]
    kind, index = match.group(1), _index(match.group(1), int(match.group(2)), layout, name)
    if kind == "hidden":
        module = layout.embeddings if index == 0 else layout.layer(index - 1)
        return [_Source(module, 0)], lambda values: values[0]
    attention = layout.attention_of(index)
    if kind in ("attention", "scores") and not layout.plain_scores:
        raise ValueError(
            f"{name}: this model's attention (DeBERTa's disentangled attention) neither returns its probabilities "
            "nor has scores q·k/√d that the projections give; match 'hidden:K' or 'values:K' instead"
        )
    if kind == "attention":
        return [_Source(attention, 1)], lambda values: _probabilities(values[0], name)
    query, key, value = (f"{attention}.{p}" for p in layout.projections)
    heads = layout.num_heads
    if kind == "values":
        return [_Source(value, 0)], lambda values: _split_heads(values[0], heads)
    return [_Source(query, 0), _Source(key, 0)], lambda values: _scores(values[0], values[1], heads)


def _split_heads(projected: Tensor, heads: int) -> Tensor:
    batch, length, width = projected.shape
    return projected.view(batch, length, heads, width // heads).transpose(1, 2)


def _scores(query: Tensor, key: Tensor, heads: int) -> Tensor:
    q, k = _split_heads(query, heads), _split_heads(key, heads)
    return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


def _probabilities(value: Any, name: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(
            f"{name}: the attention module returned no probabilities; load the model with attn_implementation='eager'"
        )
    return value


def check_layer_name(model: nn.Module, name: str) -> None:
    """Raise a clear error for a module name or layer index the model does not have."""
    if is_layer_index_name(name) and is_transformer(model):
        layout = layout_of(model)
        _plan(layout, name)
        if name.startswith("attention:"):
            _require_eager(model, name)
    elif _VIRTUAL.match(name):
        raise ValueError(
            f"layer {name!r} addresses a transformer layer by index, but {type(model).__name__} is not a "
            "Hugging Face transformer; name its modules instead (dotted module names)"
        )
    else:
        resolve_module(model, name)


def _require_eager(model: nn.Module, name: str) -> None:
    implementation = getattr(model.config, "_attn_implementation", "eager")
    if implementation not in ("eager", None):
        raise ValueError(
            f"{name!r} needs attention probabilities, but the model uses attn_implementation="
            f"{implementation!r}, which does not return them; load it with attn_implementation='eager' "
            "or call model.set_attn_implementation('eager')"
        )


class LayerCapture:
    """Record layers named by index (and plain module names) during a forward pass; see the module doc."""

    def __init__(self, model: nn.Module, names: Iterable[str], detach: bool = False) -> None:
        self.names = list(dict.fromkeys(names))
        for name in self.names:
            check_layer_name(model, name)
        layout = layout_of(model)
        self.plans = {name: _plan(layout, name) for name in self.names}
        sources = sorted(
            {s for sources, _ in self.plans.values() for s in sources}, key=lambda s: (s.module, s.element)
        )
        self.model, self.detach = model, detach
        self._modules = {s.module: resolve_module(model, s.module) for s in sources}
        self._elements = {
            module: sorted({s.element for s in sources if s.module == module}) for module in self._modules
        }
        self.outputs: dict[_Source, Any] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, module_name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            for element in self._elements[module_name]:
                value = output[element] if isinstance(output, tuple | list) else output
                if self.detach and isinstance(value, Tensor):
                    value = value.detach()
                self.outputs.setdefault(_Source(module_name, element), value)  # first call wins

        return hook

    def __enter__(self) -> LayerCapture:
        self.outputs.clear()
        try:
            for name, module in self._modules.items():
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.plans:
            raise KeyError(f"{name!r} was not captured; captured: {self.names}")
        sources, combine = self.plans[name]
        missing = [s.module for s in sources if s not in self.outputs]
        if missing:
            raise KeyError(f"{name!r}: module(s) {missing} did not run during the forward pass")
        return combine([self.outputs[s] for s in sources])


def open_capture(model: nn.Module, names: Iterable[str], detach: bool = False) -> Capture | LayerCapture:
    """A :class:`LayerCapture` when some name addresses a transformer layer by index, else a plain Capture."""
    names = list(names)
    if is_transformer(model) and any(is_layer_index_name(name) for name in names):
        return LayerCapture(model, names, detach=detach)
    return Capture(model, names, detach=detach)
