"""Checkpoints as safetensors + JSON, written atomically and verifiable; nothing is ever unpickled.

A checkpoint is a folder ``<run>/checkpoints/epoch-0003/`` (the end of epoch 3, counted from 0) or
``epoch-0003-step-00001200/`` (a step checkpoint inside epoch 3, ``train.checkpoint_every_steps``)
holding one ``<part>.safetensors`` per trained module (``model`` is the network itself and loads into the
bare model), the optimizer's tensors, the RNG states, and ``state.json`` (epoch, step, scheduler,
optimizer settings, recipe, seed, library versions and the sha256 of every other file, checked on
load: distill.train.resume). Each file is fsynced in a staging folder, the folder renamed into place
and fsynced, then ``checkpoints/latest.json`` replaced atomically, so a crash never leaves a half
checkpoint behind the pointer, and a damaged one is detected rather than loaded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_file, save_model
from torch import nn

from distill.train.atomic import atomic_write_json, fsync_folder, read_json
from distill.train.faults import fault_point
from distill.train.rng import capture_rng_states

LATEST = "latest.json"
STATE = "state.json"
NAME_PATTERN = re.compile(r"epoch-(\d{4,})(?:-step-(\d+))?")
STAGING_PREFIX = "."  # staging folders and temporary files start with a dot: never taken for checkpoints


def load_module_weights(module: nn.Module, path: str | os.PathLike, strict: bool = True) -> None:
    """Load a ``.safetensors`` file (or the ``model.safetensors`` of a checkpoint folder) into ``module``."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no weights at {str(path)!r}; expected a .safetensors file or a checkpoint folder")
    missing, unexpected = load_model(module, str(path), strict=False)
    if strict and (missing or unexpected):
        raise ValueError(
            f"{path} does not fit the model: missing keys {sorted(missing)[:10]}, "
            f"unexpected keys {sorted(unexpected)[:10]}; was it saved from a model built from the same recipe?"
        )


def library_versions() -> dict[str, str]:
    import accelerate

    import distill

    return {
        "distill": distill.__version__,
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------- optimizer state <-> tensors + JSON


def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Separate an optimizer state_dict into named tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state_dict["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ---------------------------------------------------------------- whole checkpoints


def checkpoint_name(epoch: int, step: int | None = None) -> str:
    """``epoch-0003`` at the end of an epoch; ``epoch-0003-step-00001200`` for a step checkpoint inside it."""
    return f"epoch-{epoch:04d}" if step is None else f"epoch-{epoch:04d}-step-{step:08d}"


def checkpoint_order(name: str) -> tuple[int, int, int] | None:
    """A sort key putting checkpoints in training order (a step checkpoint of epoch 3 before the end of epoch
    3), or None when ``name`` is not a checkpoint's."""
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        return None
    epoch, step = match.groups()
    return (int(epoch), 0, int(step)) if step is not None else (int(epoch), 1, 0)


def checkpoint_folders(checkpoints_dir: Path) -> list[Path]:
    """The checkpoint folders present, oldest first (staging folders and stray files excluded)."""
    if not checkpoints_dir.is_dir():
        return []
    named = [(checkpoint_order(path.name), path) for path in checkpoints_dir.iterdir() if path.is_dir()]
    return [path for order, path in sorted((o, p) for o, p in named if o is not None)]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, write: Callable[[str], None]) -> str:
    """Write one checkpoint file, fsync it, and return its sha256."""
    write(str(path))
    with open(path, "rb") as stream:
        os.fsync(stream.fileno())
    fault_point(f"checkpoint:{path.name}")
    return sha256_of(path)


def remove_leftovers(checkpoints_dir: Path) -> None:
    """Staging folders and temporary files a killed writer left behind (never a finished checkpoint)."""
    if not checkpoints_dir.is_dir():
        return
    for path in checkpoints_dir.iterdir():
        if path.name.startswith(STAGING_PREFIX):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def write_checkpoint(
    checkpoints_dir: Path,
    epoch: int,
    parts: dict[str, nn.Module],
    optimizer_state: dict,
    state: dict,
    keep_last: int = 2,
    weights_only: bool = False,
    optimizer_in_newest_only: bool = False,
    step_in_epoch: int | None = None,
) -> Path:
    """Write one checkpoint folder atomically, point latest.json at it, prune old ones.

    ``step_in_epoch``: a step checkpoint inside ``epoch`` (named by the global step in ``state``).
    ``weights_only`` (a finished stage): the weights and state.json alone, and every older checkpoint removed.
    ``optimizer_in_newest_only``: the older checkpoints kept lose their optimizer state (for Adam, twice the
    model's size), once the new one is in place; they can then no longer be resumed from.
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(checkpoints_dir)
    final = checkpoints_dir / checkpoint_name(epoch, state["step"] if step_in_epoch is not None else None)
    staging = Path(tempfile.mkdtemp(dir=checkpoints_dir, prefix=f"{STAGING_PREFIX}{final.name}."))
    try:
        files = {
            f"{name}.safetensors": _write_synced(
                staging / f"{name}.safetensors", lambda path, module=module: save_model(module, path)
            )
            for name, module in parts.items()
        }
        optimizer_meta = rng_meta = None
        if not weights_only:
            optimizer_tensors, optimizer_meta = split_optimizer_state(optimizer_state)
            files["optimizer.safetensors"] = _write_synced(
                staging / "optimizer.safetensors", lambda path: save_file(optimizer_tensors, path)
            )
            rng_tensors, rng_meta = capture_rng_states()
            files["rng.safetensors"] = _write_synced(
                staging / "rng.safetensors", lambda path: save_file(rng_tensors, path)
            )
        full_state = {
            "done": False,
            **state,
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "optimizer": optimizer_meta,
            "rng": rng_meta,
            "parts": sorted(parts),
            "files": files,
            "versions": library_versions(),
        }
        atomic_write_json(staging / STATE, full_state)
        fsync_folder(staging)
        fault_point("checkpoint:staged")
        if final.exists():  # an epoch re-run after resuming from an older checkpoint
            shutil.rmtree(final)
        os.replace(staging, final)
        fsync_folder(checkpoints_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fault_point("checkpoint:renamed")
    atomic_write_json(
        checkpoints_dir / LATEST, {"checkpoint": final.name, "epoch": epoch, "done": state.get("done", False)}
    )
    fault_point("checkpoint:latest")
    _prune(checkpoints_dir, 1 if weights_only else keep_last, keep=final.name)
    if optimizer_in_newest_only:
        for older in checkpoint_folders(checkpoints_dir):
            if older.name != final.name:
                _drop_optimizer_state(older)
    fault_point("checkpoint:done")
    return final


def _drop_optimizer_state(folder: Path) -> None:
    """state.json says so first (atomically), then the file goes: a crash in between leaves a folder that
    reads as weights-only with a stray file, never one that claims state it lacks."""
    path = folder / "optimizer.safetensors"
    if not path.exists():
        return
    state = read_json(folder / STATE)
    files = {name: digest for name, digest in state.get("files", {}).items() if name != path.name}
    atomic_write_json(folder / STATE, {**state, "optimizer": None, "optimizer_dropped": True, "files": files})
    path.unlink()


def _prune(checkpoints_dir: Path, keep_last: int, keep: str) -> None:
    folders = checkpoint_folders(checkpoints_dir)
    for old in folders[:-keep_last] if keep_last > 0 else []:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
