"""Teacher-output cache: compute the frozen teacher's outputs once per training example.

A frozen teacher in eval mode maps the same example to the same outputs, so once an example has
been seen its logits and captured layers can be reused by every later epoch, and by every student
distilled from the same teacher on the same dataset (benchmarks share one cache across rows and
seeds). Entries are kept per example, trimmed to the example's valid length, so batches that pad
differently reuse them. Valid only when inputs are not augmented at random (no jitter) and the
dataset yields each example's ``index``; the Distiller falls back to a live forward otherwise.

The cache lives in memory (it is a speed-up, not an artefact), so nothing is unpickled from disk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


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
        return {name: self._stack(name, [self._entries[name][k] for k in keys], length) for name in wanted}

    def store(self, outputs: dict[str, Tensor], index: Tensor, mask: Tensor | None) -> None:
        """Keep each example's slice of every output, trimmed to its valid length."""
        lengths = None if mask is None else mask.sum(dim=1).tolist()
        for name, batch_tensor in outputs.items():
            entries = self._entries.setdefault(name, {})
            for row, key in enumerate(index.tolist()):
                value = batch_tensor[row]
                if lengths is not None:
                    for dim in _length_dims(name, value):
                        value = value.narrow(dim, 0, int(lengths[row]))
                entries[key] = value.detach().to("cpu", copy=True)

    @staticmethod
    def _stack(name: str, values: list[Tensor], length: int | None) -> Tensor:
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
