"""The on-disk format of every teacher cache: safetensors shards and one JSON manifest, made once, read
memory-mapped, refused when stale.

Layout of a cache folder::

    manifest.json            format, key, what the cache holds, and one entry per finished shard
                             ({"file", <span>: [start, end], "sha256"})
    shard-00000.safetensors  rows start..end-1 of the cached data, in dataset order

The ``key`` is a sha256 of everything the stored values depend on (the teacher's weights, the data, what
is captured); a folder whose manifest holds another key is refused (:class:`StaleCacheError`), never
silently read. Each shard is written to a temporary file, fsynced and renamed, and only then recorded in
the manifest (itself replaced atomically), so a killed fill leaves the finished shards intact and the next
fill resumes at the first unrecorded one.

Several processes (DDP) fill a cache together: shard ``i`` is made by process ``i mod N`` (each writes its
own files), and after every round of N shards the main process records them, reading their sha256 from the
files. The LM top-k cache (:mod:`distill.lm.cache`, ``span`` "blocks") and the per-example output cache of
classification and tagging teachers (:mod:`distill.core.disk_cache`, ``span`` "examples") share it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from distill.train.atomic import DamagedFileError, atomic_path, atomic_write_json, read_json
from distill.train.checkpoint import sha256_of
from distill.train.world import is_main_process, process_count, process_index, wait_for_everyone

MANIFEST = "manifest.json"


class StaleCacheError(ValueError):
    """A cache folder built for another teacher, data or capture than the one asked for."""


def read_manifest(folder: Path, what: str = "teacher cache") -> dict | None:
    """The folder's manifest, None when there is none; a file without key or shards is a DamagedFileError."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or "key" not in manifest or "shards" not in manifest:
        raise DamagedFileError(f"{path} is not a {what} manifest (no key or shards); delete the folder")
    return manifest


def check_key(manifest: dict, key: str, fmt: int, folder: Path, what: str, built_for: str) -> None:
    """Refuse a manifest made for another key or format; the message says what differs and what to do."""
    if manifest.get("key") != key:
        raise StaleCacheError(
            f"the {what} in {folder} was built for another {built_for} "
            f"(key {str(manifest.get('key'))[:12]}…, expected {key[:12]}…); delete it or choose another folder"
        )
    if manifest.get("format") != fmt:
        raise StaleCacheError(f"the {what} in {folder} has format {manifest.get('format')}, expected {fmt}")


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


class ShardStore:
    """Writes the shards of one cache folder; ``header`` is the manifest's fixed part (format, key, sizes)."""

    def __init__(self, folder: Path, header: dict[str, Any], span: str, shards: list[dict] | None = None) -> None:
        self.folder, self.header, self.span = Path(folder), dict(header), span
        self.shards: list[dict] = list(shards or [])

    def fill(
        self,
        total: int,
        shard_rows: int,
        make: Callable[[int, int], dict[str, Tensor]],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Make every missing shard of rows ``[0, total)``, ``shard_rows`` each: ``make(start, end)`` gives
        the tensors of rows start..end-1. Shard ``i`` is made by process ``i mod N``; see the module doc."""
        self.folder.mkdir(parents=True, exist_ok=True)
        count = math.ceil(total / shard_rows)
        world, rank = process_count(), process_index()
        if not self.shards:
            self._write_manifest()  # the key is on disk from the first shard on: a stale resume is refused
        for first in range(len(self.shards), count, world):
            number = first + rank
            if number < count:
                start, end = number * shard_rows, min((number + 1) * shard_rows, total)
                with atomic_path(self.folder / shard_name(number), every_process=True) as temporary:
                    save_file(make(start, end), str(temporary))
            wait_for_everyone()  # every shard of the round is on disk before it is recorded
            if not is_main_process():
                continue  # only the main process reads the shards' sha256 and writes the manifest
            for recorded in range(first, min(first + world, count)):
                start, end = recorded * shard_rows, min((recorded + 1) * shard_rows, total)
                path = self.folder / shard_name(recorded)
                self.shards.append({"file": path.name, self.span: [start, end], "sha256": sha256_of(path)})
            self._write_manifest()
            if progress is not None:
                progress(self.shards[-1][self.span][1], total)
        wait_for_everyone()  # the manifest is complete before any process opens the cache

    def _write_manifest(self) -> None:
        atomic_write_json(self.folder / MANIFEST, {**self.header, "shards": self.shards})  # main process only


def open_finished(
    folder: Path, expected_key: str | None, fmt: int, what: str, built_for: str, span: str
) -> tuple[dict, list[Any]]:
    """The manifest of a finished cache and its shards opened memory-mapped; a missing, stale or unfinished
    cache is refused with a sentence that says what to do."""
    manifest = read_manifest(folder, what)
    if manifest is None:
        raise FileNotFoundError(f"no {what} in {folder} (no {MANIFEST}); fill it with distill cache-teacher")
    if expected_key is not None:
        check_key(manifest, expected_key, fmt, folder, what, built_for)
    done = covered(manifest, span)
    if done != manifest[span]:
        raise ValueError(
            f"the {what} in {folder} is unfinished ({done} of {manifest[span]} {span}); "
            "run distill cache-teacher again to finish it"
        )
    return manifest, [safe_open(str(Path(folder) / shard["file"]), framework="pt") for shard in manifest["shards"]]


def covered(manifest: dict, span: str) -> int:
    """How many rows the manifest's finished shards hold (they are contiguous from row 0)."""
    return manifest["shards"][-1][span][1] if manifest["shards"] else 0


def verify_shards(folder: Path, manifest: dict) -> None:
    """Check every shard's sha256 against the manifest (a DamagedFileError names the first that differs)."""
    for shard in manifest["shards"]:
        if sha256_of(Path(folder) / shard["file"]) != shard["sha256"]:
            raise DamagedFileError(f"{Path(folder) / shard['file']} does not match its sha256: refill the cache")


def bytes_on_disk(folder: Path, manifest: dict) -> int:
    return sum((Path(folder) / shard["file"]).stat().st_size for shard in manifest["shards"])
