"""Teacher-output cache: compute the frozen teacher's outputs once per training example.

A frozen teacher in eval mode maps the same example to the same outputs, so once an example has
been seen its logits and captured layers can be reused by every later epoch, and by every student
distilled from the same teacher on the same dataset (benchmarks share one cache across rows and
seeds). Entries are kept per example, trimmed to the example's valid length, so batches that pad
differently reuse them. Valid only when inputs are not augmented at random (no jitter) and the
dataset yields each example's ``index``; the Distiller falls back to a live forward otherwise.

This cache lives in memory and is lost with the run; ``teacher.cache`` in a recipe keeps the same entries
on disk instead, shared by later runs (:mod:`distill.core.disk_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.capture.hf_layers import open_capture
from distill.core.batch import Inputs, call_model, logits_of


@torch.no_grad()
def teacher_forward(teacher: nn.Module, names: Sequence[str], inputs: Inputs) -> dict[str, Tensor]:
    """The frozen teacher's ``logits`` and its captured layers ``names`` on ``inputs`` (what a cache holds)."""
    with open_capture(teacher, names, detach=True) as captured:
        logits = logits_of(call_model(teacher, inputs))
    return {"logits": logits, **{name: captured[name] for name in names}}


def trimmed(name: str, value: Tensor, length: int | None) -> Tensor:
    """One example's ``value`` of output ``name`` cut to its ``length`` valid positions (None: as it is)."""
    if length is not None:
        for dim in _length_dims(name, value):
            value = value.narrow(dim, 0, int(length))
    return value


def stack_padded(name: str, values: list[Tensor], length: int | None) -> Tensor:
    """Examples' trimmed values of output ``name`` zero-padded back to ``length`` positions and stacked."""
    if length is None:
        return torch.stack(values)
    padded = []
    for value in values:
        for dim in _length_dims(name, value):
            missing = length - value.shape[dim]
            if missing:
                shape = list(value.shape)
                shape[dim] = missing
                value = torch.cat([value, value.new_zeros(shape)], dim=dim)  # padding: masked by the losses
        padded.append(value)
    return torch.stack(padded)


def _length_dims(name: str, per_example: Tensor) -> tuple[int, ...]:
    """Which dimensions of one example's tensor run over sequence positions (trimmed to its length)."""
    if name.startswith(("attention:", "scores:")):
        return (1, 2)  # (heads, L, L)
    if name.startswith("values:"):
        return (1,)  # (heads, L, d)
    if name.startswith("hidden:") or (name == "logits" and per_example.dim() == 2):
        return (0,)  # (L, D), or token logits (L, C)
    return ()


class TeacherCache:
    """Per-example teacher outputs keyed by dataset index; see the module docstring."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[int, Tensor]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries.get("logits", {}))

    def lookup(self, names: Sequence[str], index: Tensor, mask: Tensor | None) -> dict[str, Tensor] | None:
        """The batch's outputs for ``names`` (plus ``logits``), padded like the batch; None if any is missing."""
        keys = [int(i) for i in index]
        wanted = ["logits", *names]
        if any(k not in self._entries.get(name, {}) for name in wanted for k in keys):
            self.misses += 1
            return None
        self.hits += 1
        length = None if mask is None else mask.shape[1]
        return {name: stack_padded(name, [self._entries[name][k] for k in keys], length) for name in wanted}

    def store(self, outputs: dict[str, Tensor], index: Tensor, mask: Tensor | None) -> None:
        """Keep each example's slice of every output, trimmed to its valid length."""
        lengths = None if mask is None else mask.sum(dim=1).tolist()
        for name, batch_tensor in outputs.items():
            entries = self._entries.setdefault(name, {})
            for row, key in enumerate(index.tolist()):
                value = trimmed(name, batch_tensor[row], None if lengths is None else lengths[row])
                entries[key] = value.detach().to("cpu", copy=True)
