"""What a batch is, and how a model is called on one.

A data loader yields ``(inputs, labels)`` or ``(inputs, labels, index)``. ``inputs`` is a tensor
(called as ``model(inputs)``) or a mapping of tensors (called as ``model(**inputs)``, the Hugging
Face convention, whose ``attention_mask`` is the padding mask every loss honours).

When teacher and student tokenise differently, text batches carry both encodings: the student's under
the usual keys and the teacher's under ``teacher_``-prefixed ones. A model marked with
:func:`reads_teacher_encoding` is called on the prefixed keys; every other model never sees them.
Tagging batches also carry ``teacher_positions`` (:data:`ALIGNMENT_KEY`): for each student piece, the
teacher position of the same word, so such a teacher's per-token logits come back in the student's
positions (gathered, so gradients flow when the teacher itself is trained on the student's labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

Inputs = Tensor | Mapping[str, Tensor]


@dataclass
class Batch:
    """One training or evaluation batch."""

    inputs: Inputs
    labels: Tensor
    index: Tensor | None = None  # dataset indices, for methods that keep per-example state

    @property
    def mask(self) -> Tensor | None:
        """The (batch, length) padding mask, when the inputs carry one."""
        if isinstance(self.inputs, Mapping):
            return self.inputs.get("attention_mask")
        return None

    def map_inputs(self, transform) -> Batch:
        return Batch(transform(self.inputs), self.labels, self.index)


def as_batch(raw: Any) -> Batch:
    """Turn what a DataLoader yields into a Batch; the error says which forms are accepted."""
    if isinstance(raw, Batch):
        return raw
    if isinstance(raw, Mapping) and "labels" in raw:
        inputs = {key: value for key, value in raw.items() if key not in ("labels", "index")}
        return Batch(inputs, raw["labels"], raw.get("index"))
    if isinstance(raw, Sequence) and len(raw) in (2, 3):
        return Batch(raw[0], raw[1], raw[2] if len(raw) == 3 else None)
    raise TypeError(
        "a batch must be (inputs, labels), (inputs, labels, index) or a mapping with 'labels'; "
        f"got {type(raw).__name__}"
    )


TEACHER_PREFIX = "teacher_"
ALIGNMENT_KEY = "teacher_positions"  # (batch, student length) teacher positions; see the module docstring


def reads_teacher_encoding(model: nn.Module) -> nn.Module:
    """Mark ``model`` (a teacher with its own tokenizer) to read the ``teacher_`` keys of text batches."""
    model.distill_teacher_encoding = True
    return model


def model_inputs(model: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments ``model`` takes from a batch of text inputs (see the module docstring)."""
    own = {key: value for key, value in inputs.items() if not key.startswith(TEACHER_PREFIX)}
    if not getattr(model, "distill_teacher_encoding", False):
        return own
    teacher = {
        key[len(TEACHER_PREFIX) :]: value
        for key, value in inputs.items()
        if key.startswith(TEACHER_PREFIX) and key != ALIGNMENT_KEY
    }
    return teacher or own  # a probe of random tokens has one encoding, valid for both vocabularies


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` on tensor inputs, or with keyword arguments for a mapping of inputs; a teacher that
    reads its own encoding of a tagging batch returns its logits in the student's positions."""
    if not isinstance(inputs, Mapping):
        return model(inputs)
    output = model(**model_inputs(model, inputs))
    positions = inputs.get(ALIGNMENT_KEY)
    if positions is None or not getattr(model, "distill_teacher_encoding", False):
        return output
    logits = logits_of(output)
    return logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def logits_of(output: Any) -> Tensor:
    """The logits of a model output: the tensor itself, ``.logits`` (Hugging Face) or ``output[0]``."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}; return a tensor")


def batch_size_of(inputs: Inputs) -> int:
    if isinstance(inputs, Mapping):
        return int(next(iter(inputs.values())).shape[0])
    return int(inputs.shape[0])


def slice_inputs(inputs: Inputs, count: int) -> Inputs:
    """The first ``count`` examples of ``inputs`` (a small probe batch)."""
    if isinstance(inputs, Mapping):
        return {key: value[:count] for key, value in inputs.items()}
    return inputs[:count]


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    if isinstance(inputs, Mapping):
        return {key: value.to(device) for key, value in inputs.items()}
    return inputs.to(device)
