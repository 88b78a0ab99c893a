"""The teacher's outputs per training example on disk (``teacher.cache`` for classification and tagging):
computed once, read memory-mapped by every later epoch, seed, row and run.

A frozen teacher in eval mode maps an example to the same outputs every time, so a run with
``teacher.cache`` first passes the training set through the teacher once, in dataset order, and stores
each example's logits and every captured layer the objective matches (``hidden:…``, ``attention:…``),
trimmed to the example's valid length. Training then reads them instead of running the teacher. The
files follow the shared format of :mod:`distill.core.shard_store`; each shard holds, per output ``name``,
``name`` (every example's values, flattened and concatenated) and ``name#shape`` (one row of sizes per
example), so examples of different lengths take no padding on disk.

The key is a sha256 of the teacher's weights, the training inputs (every example's tensors, labels
excluded, in order), the captured names and the stored dtype. ``teacher.cache.dir`` holds one sub-folder
per key (its first 16 hex digits), so rows capturing different layers keep separate caches in one folder,
and a folder's manifest with another key is refused. ``dtype: float16`` halves the bytes; the values are
then rounded, and the default float32 reproduces a live teacher's outputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.utils.data import Dataset

from distill.core.batch import as_batch, to_device
from distill.core.cache import stack_padded, teacher_forward, trimmed
from distill.core.shard_store import (
    ShardStore,
    StaleCacheError,
    bytes_on_disk,
    check_key,
    open_finished,
    read_manifest,
    verify_shards,
)
from distill.sections import RecipeSection, Text

FORMAT = 1
SPAN = "examples"
WHAT = "teacher output cache"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TeacherCacheSpec(RecipeSection):
    """``teacher.cache``: the teacher's outputs on disk instead of a live teacher in training.

    Causal LMs store the teacher's top-k next-token distribution (``top_k``, ``tail``, ``shard_blocks``;
    :mod:`distill.lm.cache`); classification and tagging store every example's logits and captured layers
    (``dtype``, ``shard_examples``). ``dir`` defaults to ``<run folder>/teacher-cache``; give a folder
    outside the run to share one cache between runs (a cache built for another teacher or data is refused).
    ``distill cache-teacher RECIPE`` fills it ahead; a run fills what is missing itself."""

    top_k: int = Field(32, ge=1)
    tail: Literal["renormalize", "uniform", "student"] = "renormalize"
    dir: Text | None = None
    batch_size: int = Field(8, ge=1)
    shard_blocks: int = Field(256, ge=1)
    shard_examples: int = Field(4096, ge=1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"

    def folder(self, run_dir: Path) -> Path:
        return Path(self.dir) if self.dir else Path(run_dir) / "teacher-cache"


LM_ONLY = ("top_k", "tail", "shard_blocks")
PER_EXAMPLE_ONLY = ("shard_examples", "dtype")


def check_cache_fits(spec: TeacherCacheSpec, causal_lm: bool) -> None:
    """Refuse options of the other kind of cache (a top_k for a classifier, a dtype for a causal LM)."""
    wrong = [name for name in (PER_EXAMPLE_ONLY if causal_lm else LM_ONLY) if name in spec.model_fields_set]
    if wrong:
        kind = "a causal LM's top-k cache" if causal_lm else "a classifier's per-example cache"
        valid = sorted(set(TeacherCacheSpec.model_fields) - set(LM_ONLY if not causal_lm else PER_EXAMPLE_ONLY))
        raise ValueError(f"teacher.cache.{wrong[0]} does not apply to {kind}; its options are {valid}")


def hash_tensor(digest: Any, tensor: Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def hash_weights(digest: Any, model: nn.Module) -> None:
    """Feed ``digest`` the model's weights: names, shapes, dtypes and bytes."""
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        hash_tensor(digest, tensor)


def output_cache_key(teacher: nn.Module, dataset: Dataset, names: Sequence[str], dtype: str) -> str:
    """sha256 over the teacher's weights, every training example's input tensors (labels and index
    excluded: a transfer set without labels shares the cache), the captured names and the dtype."""
    digest = hashlib.sha256(f"format {FORMAT}; dtype {dtype}; names {sorted(names)}\n".encode())
    hash_weights(digest, teacher)
    for position in range(len(dataset)):  # type: ignore[arg-type]
        item = dataset[position]
        for key in sorted(item):
            if key not in ("labels", "index"):
                digest.update(key.encode())
                hash_tensor(digest, item[key])
    return digest.hexdigest()


def _shard_of(
    teacher: nn.Module, names: Sequence[str], dataset: Dataset, collate: Callable, batch_size: int, dtype: torch.dtype
) -> Callable[[int, int], dict[str, Tensor]]:
    """``make(start, end)`` of :meth:`ShardStore.fill`: examples start..end-1 through the teacher."""
    device = next(teacher.parameters()).device

    def make(start: int, end: int) -> dict[str, Tensor]:
        values: dict[str, list[Tensor]] = {}
        for first in range(start, end, batch_size):
            batch = as_batch(collate([dataset[i] for i in range(first, min(first + batch_size, end))]))
            inputs = to_device(batch.inputs, device)
            lengths = None if batch.mask is None else batch.mask.sum(dim=1).tolist()
            for name, output in teacher_forward(teacher, names, inputs).items():
                for row in range(output.shape[0]):
                    length = None if lengths is None else lengths[row]
                    values.setdefault(name, []).append(trimmed(name, output[row], length).cpu())
        stored: dict[str, Tensor] = {}
        for name, examples in values.items():
            stored[name] = torch.cat([value.reshape(-1) for value in examples]).to(dtype)
            stored[f"{name}#shape"] = torch.tensor([list(value.shape) for value in examples], dtype=torch.int64)
        return stored

    return make


def fill_output_cache(
    root: Path,
    teacher: nn.Module,
    names: Sequence[str],
    dataset: Dataset,
    collate: Callable,
    batch_size: int = 8,
    shard_examples: int = 4096,
    dtype: str = "float32",
    progress: Callable[[int, int], None] | None = None,
) -> OutputCache:
    """The finished cache of ``teacher``'s outputs (logits and ``names``) on ``dataset`` under ``root``,
    its missing shards made first (resuming a killed fill; several processes share the work)."""
    was_training = teacher.training
    teacher.eval()
    key = output_cache_key(teacher, dataset, names, dtype)
    folder = Path(root) / key[:16]
    manifest = read_manifest(folder, WHAT)
    if manifest is not None:
        check_key(manifest, key, FORMAT, folder, WHAT, "teacher, data or captured layers")
        shard_examples = manifest["shard_examples"]  # resuming: the shards already written fix the layout
    header = {"format": FORMAT, "key": key, "names": sorted(names), "dtype": dtype}
    header.update(examples=len(dataset), shard_examples=shard_examples)  # type: ignore[arg-type]
    store = ShardStore(folder, header, SPAN, None if manifest is None else manifest["shards"])
    make = _shard_of(teacher, names, dataset, collate, batch_size, DTYPES[dtype])
    store.fill(len(dataset), shard_examples, make, progress)  # type: ignore[arg-type]
    teacher.train(was_training)
    return OutputCache(folder, expected_key=key)


class OutputCache:
    """A finished per-example teacher output cache, read memory-mapped; the Distiller's ``teacher_cache``
    (the same ``lookup`` as the in-memory :class:`~distill.core.cache.TeacherCache`)."""

    complete = True  # holds every training example: the teacher need not be on the training device

    def __init__(self, folder: str | Path, expected_key: str | None = None) -> None:
        self.folder = Path(folder)
        built_for = "teacher, data or captured layers"
        self.manifest, self._files = open_finished(self.folder, expected_key, FORMAT, WHAT, built_for, SPAN)
        self.names = ["logits", *self.manifest["names"]]
        self.hits = self.misses = 0
        self._shapes = [{name: f.get_tensor(f"{name}#shape") for name in self.names} for f in self._files]
        self._offsets = [
            {name: torch.cat([shapes.new_zeros(1), shapes.prod(dim=1).cumsum(0)]) for name, shapes in shard.items()}
            for shard in self._shapes
        ]

    def __len__(self) -> int:
        return self.manifest["examples"]

    def verify(self) -> None:
        verify_shards(self.folder, self.manifest)

    def bytes_on_disk(self) -> int:
        return bytes_on_disk(self.folder, self.manifest)

    def example(self, name: str, index: int) -> Tensor:
        """Example ``index``'s stored output ``name``, trimmed to its length, as float32."""
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} is outside the cache's {len(self)} examples")
        shard, row = divmod(index, self.manifest["shard_examples"])
        start, end = self._offsets[shard][name][row : row + 2].tolist()
        shape = self._shapes[shard][name][row].tolist()
        return self._files[shard].get_slice(name)[start:end].reshape(shape).float()

    def lookup(self, names: Sequence[str], index: Tensor, mask: Tensor | None) -> dict[str, Tensor] | None:
        """The batch's outputs for ``names`` (plus ``logits``), padded like the batch; None when the cache
        does not hold one of the names (the objective captures layers it was not filled for)."""
        if any(name not in self.names for name in names):
            self.misses += 1
            return None
        self.hits += 1
        length = None if mask is None else mask.shape[1]
        keys = [int(i) for i in index]
        return {
            name: stack_padded(name, [self.example(name, key) for key in keys], length) for name in ["logits", *names]
        }

    def store(self, outputs: dict[str, Tensor], index: Tensor, mask: Tensor | None) -> None:
        """Nothing: the cache was filled before training (a live forward after a miss is not kept)."""


__all__ = ["OutputCache", "StaleCacheError", "TeacherCacheSpec", "check_cache_fits", "fill_output_cache"]
