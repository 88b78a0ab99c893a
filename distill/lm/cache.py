"""The teacher's top-k next-token distribution for a whole packed corpus, written once to disk and read back
memory-mapped, so that training runs no teacher.

Layout of a cache folder::

    manifest.json            key, k, vocabulary, block length, and one entry per finished shard (with sha256)
    shard-00000.safetensors  indices (uint16 when the vocabulary fits, else int32) and log_probs (float16),
                             both (blocks, block_size - 1, k)

Only the first ``block_size − 1`` positions of a block are stored: the last one predicts the token after
the block, which packing never scores. At k = 32 with a vocabulary under 65,536 tokens that is
32 × (2 + 2) = 128 bytes per stored position, (block_size − 1) / block_size of that per corpus token.

The folder follows the shared format of :mod:`distill.core.shard_store`: each shard is written to a
temporary file, fsynced and renamed, and only then recorded in the manifest (itself replaced atomically),
so a killed write leaves finished shards intact and :func:`fill_cache` resumes at the first missing one;
several processes fill it together, a shard each. The manifest's ``key`` is a sha256 of the teacher's
weights, its tokenizer, the corpus's token ids and k: a cache built for anything else is refused, never
silently read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.core.disk_cache import TeacherCacheSpec, hash_tensor, hash_weights
from distill.core.shard_store import ShardStore, bytes_on_disk, check_key, open_finished, read_manifest, verify_shards
from distill.losses.lm import Tail, TopKTeacher

FORMAT = 1
WHAT = "top-k cache"
BUILT_FOR = "teacher, tokenizer, corpus or k"


def cache_key(teacher: nn.Module, tokenizer, input_ids: Tensor, k: int) -> str:
    """sha256 over the teacher's weights (names, shapes, dtypes, bytes), the tokenizer, the token ids and k."""
    digest = hashlib.sha256(f"format {FORMAT}; k {k}\n".encode())
    hash_model(digest, teacher, tokenizer)
    hash_tensor(digest, input_ids)
    return digest.hexdigest()


def hash_model(digest: Any, model: nn.Module, tokenizer: Any) -> None:
    """Feed ``digest`` the model's weights (names, shapes, dtypes, bytes) and its tokenizer."""
    hash_weights(digest, model)
    digest.update(_tokenizer_fingerprint(tokenizer).encode())


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    return json.dumps(sorted(tokenizer.get_vocab().items()))


@dataclass(frozen=True)
class CacheSpec:
    key: str
    k: int
    vocab_size: int
    blocks: int
    block_size: int
    shard_blocks: int

    def header(self) -> dict:
        return {"format": FORMAT, **self.__dict__}


@torch.no_grad()
def fill_cache(
    folder: str | Path,
    teacher: nn.Module,
    tokenizer,
    input_ids: Tensor,
    k: int = 32,
    batch_size: int = 8,
    shard_blocks: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> TopKCache:
    """Write (or finish) the teacher's top-k cache for packed blocks ``input_ids`` ``(blocks, block_size)``.

    Finished shards of a matching cache are kept (resume after a kill); a stale one is refused.
    ``progress(done_blocks, total_blocks)`` is called after each shard.
    """
    folder = Path(folder)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    vocab = teacher.get_output_embeddings().weight.shape[0]
    blocks, block_size = input_ids.shape
    key = cache_key(teacher, tokenizer, input_ids, k)
    manifest = read_manifest(folder, WHAT)
    if manifest is not None:
        check_key(manifest, key, FORMAT, folder, WHAT, BUILT_FOR)
        shard_blocks = manifest["shard_blocks"]  # resuming: the shards already written fix the layout
    spec = CacheSpec(key, min(k, vocab), vocab, blocks, block_size, shard_blocks)
    index_dtype = torch.uint16 if vocab <= 65536 else torch.int32
    device = next(teacher.parameters()).device

    def make(start: int, end: int) -> dict[str, Tensor]:
        indices, log_probs = [], []
        for first in range(start, end, batch_size):
            batch = input_ids[first : min(first + batch_size, end)].to(device)
            top = TopKTeacher.from_logits(teacher(input_ids=batch).logits[:, :-1], spec.k)
            indices.append(top.indices.to(index_dtype).cpu())
            log_probs.append(top.log_probs.to(torch.float16).cpu())
        return {"indices": torch.cat(indices), "log_probs": torch.cat(log_probs)}

    store = ShardStore(folder, spec.header(), "blocks", None if manifest is None else manifest["shards"])
    store.fill(blocks, shard_blocks, make, progress)
    return TopKCache(folder, expected_key=spec.key)


class TopKCache:
    """A finished top-k cache, read memory-mapped: ``teacher_for(block_indices)`` is a :class:`TopKTeacher`."""

    def __init__(self, folder: str | Path, expected_key: str | None = None, tail: Tail = "renormalize") -> None:
        self.folder = Path(folder)
        self.manifest, self._files = open_finished(self.folder, expected_key, FORMAT, WHAT, BUILT_FOR, "blocks")
        self.tail = tail
        self.k, self.block_size = self.manifest["k"], self.manifest["block_size"]

    def __len__(self) -> int:
        return self.manifest["blocks"]

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (a DamagedFileError names the first that differs)."""
        verify_shards(self.folder, self.manifest)

    def bytes_on_disk(self) -> int:
        return bytes_on_disk(self.folder, self.manifest)

    def teacher_for(self, block_indices: Sequence[int]) -> TopKTeacher:
        """The cached top-k of these blocks, ``(B, block_size, k)``; the last position (never scored) is a
        placeholder of token 0 with log-probability 0."""
        indices, log_probs = [], []
        shard_blocks = self.manifest["shard_blocks"]
        for block in block_indices:
            if not 0 <= block < len(self):
                raise IndexError(f"block {block} is outside the cache's {len(self)} blocks")
            stored = self._files[block // shard_blocks]
            row = block % shard_blocks
            indices.append(stored.get_slice("indices")[row : row + 1])
            log_probs.append(stored.get_slice("log_probs")[row : row + 1])
        index = torch.cat(indices).long()
        values = torch.cat(log_probs).float()
        index = torch.cat([index, torch.zeros_like(index[:, :1])], dim=1)
        values = torch.cat([values, torch.zeros_like(values[:, :1])], dim=1)
        return TopKTeacher(indices=index, log_probs=values, tail=self.tail)


def cache_for_task(
    spec: TeacherCacheSpec,
    run_dir: Path,
    teacher: nn.Module,
    task: Any,
    progress: Callable[[int, int], None] | None = None,
) -> TopKCache:
    """The top-k cache of ``task``'s training blocks (in dataset order), filled where it is missing."""
    filled = fill_cache(
        spec.folder(run_dir),
        teacher,
        task.tokenizer,
        task.train.input_ids(),
        k=spec.top_k,
        batch_size=spec.batch_size,
        shard_blocks=spec.shard_blocks,
        progress=progress,
    )
    return TopKCache(filled.folder, expected_key=filled.manifest["key"], tail=spec.tail)
