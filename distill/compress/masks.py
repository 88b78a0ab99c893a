"""Unstructured pruning masks: which weights to prune, by magnitude or by a first-order score, globally or
per layer, all at once or on Zhu & Gupta's cubic schedule; masks kept applied during training.

Prunable weights are those of ``nn.Linear`` and ``nn.Conv{1,2}d`` layers (biases, norms and embeddings
are few or are handled by other steps), minus the modules named in ``skip``. A mask is a float tensor of
0/1 of the weight's shape; it is kept on the model as zeros in the weight, so it survives checkpoints
and resume exactly: after each optimizer step :class:`MaskedObjective` multiplies the weights by their
masks again (AdamW would otherwise move pruned weights off zero through its moments).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


def is_skipped(name: str, skip: Sequence[str]) -> bool:
    """Whether the module ``name`` is one of ``skip`` or lies under one of them."""
    return any(name == s or name.startswith(f"{s}.") for s in skip)


def prunable_weights(model: nn.Module, skip: Sequence[str] = ()) -> dict[str, nn.Parameter]:
    """``{parameter name: weight}`` of the Linear and Conv layers of ``model`` not under a ``skip`` prefix."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE) and not is_skipped(name, skip):
            found[f"{name}.weight" if name else "weight"] = module.weight
    return found


def kept_count(total: int, sparsity: float) -> int:
    """How many of ``total`` weights survive at ``sparsity`` (rounded so that the sparsity is at least it)."""
    return total - math.ceil(round(sparsity * total, 6))


def masks_for(scores: dict[str, Tensor], sparsity: float, scope: str = "global") -> dict[str, Tensor]:
    """Keep-masks that prune the ``sparsity`` fraction of lowest-score weights, over all layers together
    (``global``) or in each layer alone (``layer``). Ties at the threshold are broken by position, so the
    count is exact."""
    if scope == "layer":
        return {
            name: _top_mask(score.flatten(), kept_count(score.numel(), sparsity)).view_as(score)
            for name, score in scores.items()
        }
    flat = torch.cat([score.flatten() for score in scores.values()])
    keep = _top_mask(flat, kept_count(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, score in scores.items():
        masks[name] = keep[start : start + score.numel()].view_as(score)
        start += score.numel()
    return masks


def _top_mask(scores: Tensor, keep: int) -> Tensor:
    mask = torch.zeros_like(scores, dtype=torch.float32)
    if keep > 0:
        mask[torch.topk(scores, keep, sorted=False).indices] = 1.0
    return mask


def magnitude_scores(weights: dict[str, nn.Parameter]) -> dict[str, Tensor]:
    """|w| (Han et al. 2015; Zhu & Gupta 2017)."""
    return {name: weight.detach().abs() for name, weight in weights.items()}


def cubic_sparsity(step: int, final: float, steps: int, initial: float = 0.0, start: int = 0) -> float:
    """Zhu & Gupta (2017), eq. 1: s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(nΔt))^3 for t in [t_0, t_0 + nΔt],
    here with nΔt = ``steps``; ``initial`` before ``start``, ``final`` after the end."""
    if step <= start:
        return initial
    progress = min(1.0, (step - start) / max(steps, 1))
    return final + (initial - final) * (1.0 - progress) ** 3


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Zero the pruned weights of ``model`` (the masks' names are its parameter names)."""
    parameters = dict(model.named_parameters())
    for name, mask in masks.items():
        parameters[name].mul_(mask.to(parameters[name].device, parameters[name].dtype))


def sparsity_of(model: nn.Module, names: Iterable[str] | None = None) -> float:
    """The fraction of zeros among the named parameters (default: every prunable weight)."""
    parameters = dict(model.named_parameters())
    chosen = [parameters[n] for n in names] if names is not None else list(prunable_weights(model).values())
    total = sum(p.numel() for p in chosen)
    return sum(int((p == 0).sum()) for p in chosen) / max(total, 1)


class MaskBuffers(nn.Module):
    """The keep-masks of named parameters as boolean buffers: a checkpoint part, so that a resumed run
    goes on with the masks it had (gradual pruning changes them as it goes)."""

    def __init__(self, masks: dict[str, Tensor], shapes: dict[str, torch.Size]) -> None:
        super().__init__()
        self.names = sorted(shapes)
        for position, name in enumerate(self.names):
            mask = masks.get(name)
            initial = torch.ones(shapes[name], dtype=torch.bool) if mask is None else mask.bool().cpu()
            self.register_buffer(f"mask_{position}", initial.clone())

    def update(self, masks: dict[str, Tensor]) -> None:
        for position, name in enumerate(self.names):
            if name in masks:
                getattr(self, f"mask_{position}").copy_(masks[name].bool())

    def masks(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"mask_{position}").float() for position, name in enumerate(self.names)}

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the pruned weights of ``model`` (in place, straight from the boolean buffers)."""
        parameters = dict(model.named_parameters())
        for position, name in enumerate(self.names):
            parameters[name].masked_fill_(~getattr(self, f"mask_{position}").to(parameters[name].device), 0)


class MaskedObjective:
    """An objective whose model keeps its pruned weights at zero after every optimizer step; with a
    ``schedule`` (step -> new masks, or None to keep them; gradual pruning) the masks change first.
    ``names`` are the parameters that may be masked (default: those of ``masks``); ``hooks(step, total)``
    run after the masks (weight clustering's ties, a lottery ticket's late-resetting copy);
    ``before_step(step, total, optimizer)`` runs before each optimizer step (RigL's regrowth). The masks
    are saved with each checkpoint (the ``masks`` part). Everything else is the wrapped objective's."""

    def __init__(
        self,
        objective: Any,
        model: nn.Module,
        masks: dict[str, Tensor],
        schedule: Callable[[int], dict[str, Tensor] | None] | None = None,
        names: Iterable[str] | None = None,
        hooks: Sequence[Callable[[int, int | None], None]] = (),
        before_step: Callable[[int, int | None, Any], bool] | None = None,
    ) -> None:
        parameters = dict(model.named_parameters())
        self.hooks, self.before_step = list(hooks), before_step
        chosen = set(masks) | set(names or ())
        self.objective, self.model, self.schedule = objective, model, schedule
        self.buffers = MaskBuffers(masks, {name: parameters[name].shape for name in chosen})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.objective, name)

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {**self.objective.parts(model), "masks": self.buffers}

    def masks(self) -> dict[str, Tensor]:
        return self.buffers.masks()

    def before_optimizer_step(self, step: int, total_steps: int | None, optimizer: Any) -> bool:
        """The Trainer's hook between backward and the optimizer step (``step`` is the one being taken):
        ``before_step`` may change the masks by the gradients (RigL); True skips this gradient step."""
        return self.before_step is not None and self.before_step(step, total_steps, optimizer)

    def after_step(self, step: int, total_steps: int | None) -> None:
        if self.schedule is not None and (new := self.schedule(step)) is not None:
            self.buffers.update(new)
        self.buffers.apply(self.model)
        for hook in self.hooks:  # clustered weights tied to their centroids again, weights kept at step k
            hook(step, total_steps)
