"""Cross-layer weight sharing (``- {share_layers: {groups: 1}}``), ALBERT style (Lan et al. 2020): the
transformer layers of the student are split into ``groups`` runs of consecutive layers, and every layer
of a run becomes the same module, so the run has one set of weights (``groups: 1``: all layers share
one, as ALBERT). The shared layer starts as the mean of its run's layers (``init: mean``, every
parameter averaged) or as the run's first layer (``init: first``); follow with a ``distill`` step to
recover. The depth and the compute per example stay the same: sharing saves bytes (a layer's weights
are stored once, in the compressed safetensors file and in the ONNX file), not latency.

The layers of a run must have the same shapes (after head pruning they may not: share first, or prune
FFN neurons, whose width is uniform). Later structured pruning would slice a shared layer once per
position and is refused; low rank and clustering apply to the shared weights once. An ``export`` to a
Hugging Face folder writes every layer's copy (stock BERT has no sharing; the file is not smaller): use
``onnx`` or ``safetensors`` for the saving on disk.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from distill.capture.hf_structure import layout_of
from distill.compress.base import CompressState, CompressStep, register_step


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The transformer's list of layers (a ValueError for a model of another shape)."""
    return model.get_submodule(layout_of(model).layers)


def runs_of(count: int, groups: int) -> list[list[int]]:
    """``count`` layer indices in ``groups`` consecutive runs, as even as possible (longer runs first)."""
    return [chunk.tolist() for chunk in torch.arange(count).tensor_split(groups)]


def is_shared(model: nn.Module) -> bool:
    """Whether some layers of the transformer ``model`` are one and the same module."""
    try:
        layers = layer_list(model)
    except ValueError:
        return False
    return len({id(layer) for layer in layers}) < len(layers)


@torch.no_grad()
def mean_layer(layers: list[nn.Module]) -> nn.Module:
    """A copy of ``layers[0]`` whose every parameter and float buffer is the mean over ``layers``."""
    states = [layer.state_dict() for layer in layers]
    shapes = [{name: tuple(value.shape) for name, value in state.items()} for state in states]
    if any(shape != shapes[0] for shape in shapes[1:]):
        raise ValueError(
            "compress share_layers: the layers of a run have different shapes (heads pruned per layer?); "
            "share layers before pruning heads, or use more groups"
        )
    merged = copy.deepcopy(layers[0])
    averaged = {
        name: torch.stack([state[name] for state in states]).mean(0) if value.is_floating_point() else value
        for name, value in states[0].items()
    }
    merged.load_state_dict(averaged)
    return merged


def share_layers(model: nn.Module, groups: int, init: str = "mean") -> list[list[int]]:
    """Make each run of consecutive layers of ``model`` one module (in place); the runs."""
    layers = layer_list(model)
    if groups > len(layers):
        raise ValueError(f"compress share_layers: groups {groups} is more than the model's {len(layers)} layers")
    runs = runs_of(len(layers), groups)
    for run in runs:
        members = [layers[index] for index in run]
        shared = mean_layer(members) if init == "mean" else members[0]
        for index in run:
            layers[index] = shared
    return runs


def unshared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every layer has its own weights again (for writers that refuse
    shared tensors, such as ``save_pretrained``); its outputs are the same."""
    copied = copy.deepcopy(model)
    try:
        layers = layer_list(copied)
    except ValueError:
        return copied
    seen: set[int] = set()
    for index, layer in enumerate(layers):
        if id(layer) in seen:
            layers[index] = copy.deepcopy(layer)
        seen.add(id(layer))
    return copied


@register_step("share_layers")
class ShareLayers(CompressStep):
    kind: Literal["share_layers"] = "share_layers"
    groups: int = Field(1, ge=1)  # weight sets: 1 = every layer shares one (ALBERT)
    init: Literal["mean", "first"] = "mean"  # the shared layer: the mean of its run, or the run's first layer

    def label(self) -> str:
        sets = "one set" if self.groups == 1 else f"{self.groups} sets"
        return f"share layers ({sets} of weights, {self.init})"

    def apply(self, state: CompressState, index: int) -> None:
        model = state.require_torch(self.kind)
        state.require_unshared(self.kind)
        try:
            layer_list(model)
        except ValueError as error:
            raise ValueError(f"compress share_layers needs a transformer student: {error}") from None
        state.keep_before()
        runs = share_layers(model, self.groups, self.init)
        state.details = {"runs": runs}
