"""Compressed weights that take less disk, so that pruning and clustering show up as bytes: a safetensors
file where each mostly-zero tensor is stored as a bitmask (one bit per entry, packed) plus its non-zero
values, and each tensor with few distinct values (clustered weights) as a codebook plus b-bit indices.

Each tensor takes the smallest form: dense ``n * itemsize`` bytes, sparse ``n/8 + nnz * itemsize`` (for
fp32 smaller as soon as more than 1/32 of it is zero), or codebook ``k * itemsize + n * ceil(log2 k)/8``
for k <= 256 distinct values. A tensor that is the same storage as an earlier one (tied weights, layers
shared across depth) is written once and named as an alias. The file's metadata lists the compressed
tensors with their shapes; :func:`load_compressed` gives back the exact dense state dict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from distill.train.atomic import atomic_path

MASK, VALUES = "::mask", "::values"
CODEBOOK, CODES = "::codebook", "::codes"
META_KEY = "distill_sparse"
CODEBOOK_KEY = "distill_codebook"
ALIAS_KEY = "distill_alias"


def _form(tensor: Tensor) -> tuple[str, int]:
    """The smallest storage form of ``tensor``: ("dense" | "sparse" | "codebook", bits per index)."""
    size, count = tensor.element_size(), tensor.numel()
    options = {"dense": count * size, "sparse": count / 8 + int(torch.count_nonzero(tensor)) * size}
    distinct = torch.unique(tensor)
    bits = max(1, math.ceil(math.log2(len(distinct)))) if len(distinct) <= 256 else 0
    if bits:
        options["codebook"] = len(distinct) * size + count * bits / 8
    return min(options, key=options.get), bits


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Each code's low ``bits`` bits, packed end to end."""
    binary = np.unpackbits(codes.astype(np.uint8)[:, None], axis=1)[:, 8 - bits :]
    return np.packbits(binary.reshape(-1))


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    binary = np.unpackbits(packed, count=count * bits).reshape(count, bits)
    return np.packbits(np.pad(binary, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)


def save_compressed(state: dict[str, Tensor], path: str | Path) -> int:
    """Write ``state`` to ``path`` (atomically), each tensor in its smallest form; returns bytes written."""
    tensors: dict[str, Tensor] = {}
    sparse: dict[str, list[int]] = {}
    coded: dict[str, list[int]] = {}
    aliases: dict[str, str] = {}
    first_of: dict[tuple, str] = {}
    for name, tensor in state.items():
        same = (
            tensor.untyped_storage().data_ptr(),
            tensor.storage_offset(),
            tensor.dtype,
            tensor.shape,
            tensor.stride(),
        )
        if tensor.numel() and same in first_of:
            aliases[name] = first_of[same]
            continue
        first_of[same] = name
        tensor = tensor.detach().cpu().contiguous()
        form, bits = _form(tensor) if tensor.is_floating_point() and tensor.numel() >= 64 else ("dense", 0)
        flat = tensor.flatten()
        if form == "sparse":
            keep = flat != 0
            tensors[name + MASK] = torch.from_numpy(np.packbits(keep.numpy()))
            tensors[name + VALUES] = flat[keep].clone()
            sparse[name] = list(tensor.shape)
        elif form == "codebook":
            codebook, codes = torch.unique(flat, return_inverse=True)
            tensors[name + CODEBOOK] = codebook
            tensors[name + CODES] = torch.from_numpy(_pack(codes.numpy(), bits))
            coded[name] = [bits, *tensor.shape]
        else:
            tensors[name] = tensor.clone()  # a view into a larger storage cannot be saved as is
    metadata = {META_KEY: json.dumps(sparse), CODEBOOK_KEY: json.dumps(coded), ALIAS_KEY: json.dumps(aliases)}
    with atomic_path(Path(path)) as staging:
        save_file(tensors, str(staging), metadata=metadata)
    return Path(path).stat().st_size


def load_compressed(path: str | Path) -> dict[str, Tensor]:
    """The dense state dict of a file written by :func:`save_compressed` (or any safetensors file)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        sparse = json.loads(metadata.get(META_KEY, "{}"))
        coded = json.loads(metadata.get(CODEBOOK_KEY, "{}"))
        state = {}
        for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if not name.endswith((MASK, VALUES, CODEBOOK, CODES)):
                state[name] = handle.get_tensor(name)
        for name, (bits, *shape) in coded.items():
            count = int(np.prod(shape)) if shape else 1
            codes = _unpack(handle.get_tensor(name + CODES).numpy(), bits, count)
            state[name] = handle.get_tensor(name + CODEBOOK)[torch.from_numpy(codes.astype(np.int64))].view(shape)
        for name, shape in sparse.items():
            values = handle.get_tensor(name + VALUES)
            count = int(np.prod(shape)) if shape else 1
            keep = torch.from_numpy(np.unpackbits(handle.get_tensor(name + MASK).numpy(), count=count).astype(bool))
            dense = torch.zeros(count, dtype=values.dtype)
            dense[keep] = values
            state[name] = dense.view(shape)
        for name, original in json.loads(metadata.get(ALIAS_KEY, "{}")).items():
            state[name] = state[original]
    return state
