"""The teacher's top-k next-token distribution for a whole packed corpus, written once to disk and read back
memory-mapped, so that training runs no teacher.

Layout of a cache folder::

    manifest.json            key, k, vocabulary, block length, and one entry per finished shard (with sha256)
    shard-00000.safetensors  indices (uint16 when the vocabulary fits, else int32) and log_probs (float16),
                             both (blocks, block_size - 1, k)

Only the first ``block_size − 1`` positions of a block are stored: the last one predicts the token after
the block, which packing never scores. At k = 32 with a vocabulary under 65,536 tokens that is
32 × (2 + 2) = 128 bytes per stored position, (block_size − 1) / block_size of that per corpus token.

Safety: each shard is written to a temporary file, fsynced and renamed, and only then recorded in the
manifest (itself replaced atomically), so a killed write leaves finished shards intact and
:func:`fill_cache` resumes at the first missing one. The manifest's ``key`` is a sha256 of the teacher's
weights, its tokenizer, the corpus's token ids and k: a cache built for anything else is refused, never
silently read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from distill.losses.lm import Tail, TopKTeacher
from distill.sections import RecipeSection, Text
from distill.train.atomic import DamagedFileError, atomic_path, atomic_write_json, read_json
from distill.train.checkpoint import sha256_of

MANIFEST = "manifest.json"
FORMAT = 1


class StaleCacheError(ValueError):
    """A cache folder built for another teacher, tokenizer, corpus or k."""


def _hash_tensor(digest, tensor: Tensor) -> None:
    tensor = tensor.detach().cpu().contiguous()
    digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def cache_key(teacher: nn.Module, tokenizer, input_ids: Tensor, k: int) -> str:
    """sha256 over the teacher's weights (names, shapes, dtypes, bytes), the tokenizer, the token ids and k."""
    digest = hashlib.sha256(f"format {FORMAT}; k {k}\n".encode())
    hash_model(digest, teacher, tokenizer)
    _hash_tensor(digest, input_ids)
    return digest.hexdigest()


def hash_model(digest: Any, model: nn.Module, tokenizer: Any) -> None:
    """Feed ``digest`` the model's weights (names, shapes, dtypes, bytes) and its tokenizer."""
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _hash_tensor(digest, tensor)
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

    def manifest(self, shards: list[dict]) -> dict:
        return {"format": FORMAT, **self.__dict__, "shards": shards}


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or "key" not in manifest or "shards" not in manifest:
        raise DamagedFileError(f"{path} is not a top-k cache manifest (no key or shards); delete the folder")
    return manifest


def _check_same(manifest: dict, spec: CacheSpec, folder: Path) -> None:
    if manifest.get("key") != spec.key:
        raise StaleCacheError(
            f"the top-k cache in {folder} was built for another teacher, tokenizer, corpus or k "
            f"(key {str(manifest.get('key'))[:12]}…, expected {spec.key[:12]}…); delete it or choose another folder"
        )
    if manifest.get("format") != FORMAT:
        raise StaleCacheError(f"the top-k cache in {folder} has format {manifest.get('format')}, expected {FORMAT}")


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
    spec = CacheSpec(key, min(k, vocab), vocab, blocks, block_size, shard_blocks)
    manifest = _read_manifest(folder)
    if manifest is not None:
        _check_same(manifest, spec, folder)
    shards = [] if manifest is None else list(manifest["shards"])
    if manifest is not None:
        shard_blocks = manifest["shard_blocks"]  # resuming: the shards already written fix the layout
        spec = CacheSpec(spec.key, spec.k, vocab, blocks, block_size, shard_blocks)
    folder.mkdir(parents=True, exist_ok=True)
    index_dtype = torch.uint16 if vocab <= 65536 else torch.int32
    device = next(teacher.parameters()).device
    for start in range(len(shards) * shard_blocks, blocks, shard_blocks):
        end = min(start + shard_blocks, blocks)
        indices, log_probs = [], []
        for first in range(start, end, batch_size):
            batch = input_ids[first : min(first + batch_size, end)].to(device)
            top = TopKTeacher.from_logits(teacher(input_ids=batch).logits[:, :-1], spec.k)
            indices.append(top.indices.to(index_dtype).cpu())
            log_probs.append(top.log_probs.to(torch.float16).cpu())
        name = f"shard-{len(shards):05d}.safetensors"
        with atomic_path(folder / name) as temporary:
            save_file({"indices": torch.cat(indices), "log_probs": torch.cat(log_probs)}, str(temporary))
        shards.append({"file": name, "blocks": [start, end], "sha256": sha256_of(folder / name)})
        atomic_write_json(folder / MANIFEST, spec.manifest(shards))
        if progress is not None:
            progress(end, blocks)
    if manifest is None and not shards:
        atomic_write_json(folder / MANIFEST, spec.manifest(shards))
    return TopKCache(folder, expected_key=spec.key)


class TopKCache:
    """A finished top-k cache, read memory-mapped: ``teacher_for(block_indices)`` is a :class:`TopKTeacher`."""

    def __init__(self, folder: str | Path, expected_key: str | None = None, tail: Tail = "renormalize") -> None:
        self.folder = Path(folder)
        manifest = _read_manifest(self.folder)
        if manifest is None:
            raise FileNotFoundError(
                f"no top-k cache in {self.folder} (no {MANIFEST}); fill it with distill cache-teacher"
            )
        if expected_key is not None and manifest["key"] != expected_key:
            raise StaleCacheError(
                f"the top-k cache in {self.folder} was built for another teacher, tokenizer, corpus or k; "
                "delete it or choose another folder"
            )
        covered = manifest["shards"][-1]["blocks"][1] if manifest["shards"] else 0
        if covered != manifest["blocks"]:
            raise ValueError(
                f"the top-k cache in {self.folder} is unfinished ({covered} of {manifest['blocks']} blocks); "
                "run distill cache-teacher again to finish it"
            )
        self.manifest, self.tail = manifest, tail
        self.k, self.block_size = manifest["k"], manifest["block_size"]
        self._files = [safe_open(str(self.folder / shard["file"]), framework="pt") for shard in manifest["shards"]]

    def __len__(self) -> int:
        return self.manifest["blocks"]

    def verify(self) -> None:
        """Check every shard's sha256 against the manifest (a DamagedFileError names the first that differs)."""
        for shard in self.manifest["shards"]:
            if sha256_of(self.folder / shard["file"]) != shard["sha256"]:
                raise DamagedFileError(f"{self.folder / shard['file']} does not match its sha256: refill the cache")

    def bytes_on_disk(self) -> int:
        return sum((self.folder / shard["file"]).stat().st_size for shard in self.manifest["shards"])

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


class TopKCacheSpec(RecipeSection):
    """``teacher.cache``: train from the teacher's top-k stored on disk instead of running it live.

    ``dir`` defaults to ``<run folder>/teacher-cache``; give a folder outside the run to share one cache
    between runs (a cache built for another teacher, tokenizer, corpus or k is refused). ``distill
    cache-teacher RECIPE`` fills it ahead; a run fills what is missing itself."""

    top_k: int = Field(32, ge=1)
    tail: Literal["renormalize", "uniform", "student"] = "renormalize"
    dir: Text | None = None
    batch_size: int = Field(8, ge=1)
    shard_blocks: int = Field(256, ge=1)

    def folder(self, run_dir: Path) -> Path:
        return Path(self.dir) if self.dir else Path(run_dir) / "teacher-cache"


def cache_for_task(
    spec: TopKCacheSpec,
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
