"""Atomic file writes: a temporary file in the same folder, fsynced, then renamed over the target, so a
reader (or a crash) never sees half a file and an earlier version survives a failed write.

Every file a run writes goes through here, so this is also where "only the main process writes" holds
under several processes (:mod:`distill.train.world`): the others write to the temporary file as usual (the
same code runs everywhere), and it is removed instead of renamed onto the target."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors.torch import save_model
from torch import nn

from distill.train.world import is_main_process


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


@contextmanager
def atomic_path(path: Path, every_process: bool = False) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name; renamed onto ``path`` (after an
    fsync) when the block succeeds (in the main process, or in any with ``every_process``: a file that each
    process writes for itself, such as its shard of a teacher cache), removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        if not (every_process or is_main_process()):  # another process of a multi-process run: its copy is not kept
            Path(temporary).unlink(missing_ok=True)
            return
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        fsync_folder(path.parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_module_atomic(module: nn.Module, path: Path) -> None:
    """save_model (which handles tied weights) to a temporary file, then rename."""
    with atomic_path(path) as temporary:
        save_model(module, str(temporary))


def fsync_folder(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (POSIX: the folder's entry list is itself synced)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class DamagedFileError(ValueError):
    """A file distill wrote no longer reads back: truncated, garbled or edited. The message names it."""


def read_json(path: Path) -> Any:
    """A JSON file's contents; a file that does not parse is a DamagedFileError naming it and where."""
    try:
        return json.loads(Path(path).read_text())
    except UnicodeDecodeError as error:
        raise DamagedFileError(f"{path} is garbled (not UTF-8 text: {error.reason})") from None
    except json.JSONDecodeError as error:
        raise DamagedFileError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): "
            "it was truncated or edited"
        ) from None
