"""Pruned weights that take less disk: a safetensors file where each mostly-zero tensor is stored as a
bitmask (one bit per entry, packed) plus its non-zero values, so that pruning shows up as bytes.

A tensor is stored this way when that is smaller: ``n/8 + nnz * itemsize`` bytes against ``n * itemsize``
(for fp32 as soon as more than 1/32 of it is zero). The file's metadata lists the compressed tensors
with their shapes; :func:`load_compressed` gives back the exact dense state dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from distill.train.checkpoint import atomic_path

MASK, VALUES = "::mask", "::values"
META_KEY = "distill_sparse"


def _compressed_is_smaller(tensor: Tensor) -> bool:
    nonzero = int(torch.count_nonzero(tensor))
    return tensor.numel() / 8 + nonzero * tensor.element_size() < tensor.numel() * tensor.element_size()


def save_compressed(state: dict[str, Tensor], path: str | Path) -> int:
    """Write ``state`` to ``path`` (atomically), sparse tensors as bitmask + values; returns bytes written."""
    tensors: dict[str, Tensor] = {}
    sparse: dict[str, list[int]] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu().contiguous()
        if tensor.is_floating_point() and tensor.numel() >= 64 and _compressed_is_smaller(tensor):
            flat = tensor.flatten()
            keep = flat != 0
            tensors[name + MASK] = torch.from_numpy(np.packbits(keep.numpy()))
            tensors[name + VALUES] = flat[keep].clone()
            sparse[name] = list(tensor.shape)
        else:
            tensors[name] = tensor.clone()  # shared storage (tied weights) cannot be saved as is
    with atomic_path(Path(path)) as staging:
        save_file(tensors, str(staging), metadata={META_KEY: json.dumps(sparse)})
    return Path(path).stat().st_size


def load_compressed(path: str | Path) -> dict[str, Tensor]:
    """The dense state dict of a file written by :func:`save_compressed` (or any safetensors file)."""
    with safe_open(str(path), framework="pt") as handle:
        sparse = json.loads((handle.metadata() or {}).get(META_KEY, "{}"))
        state = {}
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if not name.endswith((MASK, VALUES)):
                state[name] = handle.get_tensor(name)
        for name, shape in sparse.items():
            values = handle.get_tensor(name + VALUES)
            count = int(np.prod(shape)) if shape else 1
            keep = torch.from_numpy(np.unpackbits(handle.get_tensor(name + MASK).numpy(), count=count).astype(bool))
            dense = torch.zeros(count, dtype=values.dtype)
            dense[keep] = values
            state[name] = dense.view(shape)
    return state
