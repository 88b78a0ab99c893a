"""Structured channel pruning of convolutional (and MLP) students with torch-pruning's dependency graph
(Fang et al. 2023, DepGraph): removing an output channel of a conv also removes the matching BatchNorm
entries and input channels of every layer that reads it, so the network really shrinks. Importance is
the group L2 magnitude or the group first-order Taylor score (|w · ∂L/∂w| over the coupled parameters,
L the distillation loss on a few training batches); the classifier (its logits) is never pruned."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from distill.core.batch import Inputs


def _classifier(model: nn.Module) -> nn.Module:
    """The module producing the logits: ``head`` when there is one, else the last Linear."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Module):
        return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no Linear classifier to keep while pruning channels")
    return linears[-1]


def prune_channels(
    model: nn.Module,
    example_inputs: Inputs,
    amount: float,
    scope: str = "layer",
    method: str = "magnitude",
    losses: Iterable[Tensor] = (),
) -> int:
    """Remove the ``amount`` fraction of channels (conv outputs, hidden units) of every prunable layer, or
    over all layers together (``scope: global``); returns how many parameters were removed."""
    import torch_pruning as tp

    before = sum(p.numel() for p in model.parameters())
    if method == "taylor":
        importance = tp.importance.GroupTaylorImportance()
        model.zero_grad(set_to_none=True)
        for loss in losses:
            loss.backward()  # the Taylor importance reads the accumulated .grad
    else:
        importance = tp.importance.GroupMagnitudeImportance(p=2)
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=importance,
        global_pruning=scope == "global",
        pruning_ratio=amount,
        ignored_layers=[_classifier(model)],
    )
    with torch.no_grad() if method != "taylor" else torch.enable_grad():
        pruner.step()
    model.zero_grad(set_to_none=True)
    return before - sum(p.numel() for p in model.parameters())
