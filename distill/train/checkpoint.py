"""Checkpoints as safetensors + JSON, written atomically; nothing is ever unpickled.

A checkpoint is a folder ``<run>/checkpoints/epoch-0003/`` holding one ``<part>.safetensors`` per
trained module (``model`` is the network itself and loads into the bare model), the optimizer's
tensors, the RNG states, and ``state.json`` (epoch, step, scheduler, optimizer settings, recipe,
seed, library versions). The folder is written under a temporary name and renamed into place,
then ``checkpoints/latest.json`` is replaced atomically, so a crash never leaves a half checkpoint
behind the pointer.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

LATEST = "latest.json"
STATE = "state.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that takes a file name; renamed onto ``path`` (after an
    fsync) when the block succeeds, removed when it fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_module_atomic(module: nn.Module, path: Path) -> None:
    """save_model (which handles tied weights) to a temporary file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    save_model(module, str(temporary))
    os.replace(temporary, path)


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


# ---------------------------------------------------------------- RNG states


def capture_rng_states() -> tuple[dict[str, torch.Tensor], dict]:
    """torch (CPU and CUDA), numpy and Python RNG states, as tensors + JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    meta = {
        "numpy": {
            "kind": kind,
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": cached_gauss,
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return tensors, meta


def restore_rng_states(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[key] for key in sorted(tensors) if key.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_meta = meta["numpy"]
    np.random.set_state(
        (
            numpy_meta["kind"],
            tensors["numpy_keys"].numpy().astype(np.uint32),
            numpy_meta["pos"],
            numpy_meta["has_gauss"],
            numpy_meta["cached_gaussian"],
        )
    )
    python_meta = meta["python"]
    random.setstate((python_meta["version"], tuple(python_meta["state"]), python_meta["gauss_next"]))


# ---------------------------------------------------------------- whole checkpoints


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def write_checkpoint(
    checkpoints_dir: Path,
    epoch: int,
    parts: dict[str, nn.Module],
    optimizer_state: dict,
    state: dict,
    keep_last: int = 2,
    weights_only: bool = False,
    optimizer_in_newest_only: bool = True,
) -> Path:
    """Write one epoch's checkpoint folder atomically, point latest.json at it, prune old ones.

    ``weights_only`` (a finished stage): the weights and state.json alone, and every older checkpoint removed.
    ``optimizer_in_newest_only``: the older checkpoints kept lose their optimizer state (for Adam, twice the
    model's size), once the new one is in place; resuming reads the newest, the older ones keep weights.
    """
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoints_dir / checkpoint_name(epoch)
    staging = Path(tempfile.mkdtemp(dir=checkpoints_dir, prefix=f".{final.name}."))
    try:
        for name, module in parts.items():
            save_module_atomic(module, staging / f"{name}.safetensors")
        optimizer_meta = rng_meta = None
        if not weights_only:
            optimizer_tensors, optimizer_meta = split_optimizer_state(optimizer_state)
            save_file(optimizer_tensors, str(staging / "optimizer.safetensors"))
            rng_tensors, rng_meta = capture_rng_states()
            save_file(rng_tensors, str(staging / "rng.safetensors"))
        full_state = {
            **state,
            "epoch": epoch,
            "optimizer": optimizer_meta,
            "rng": rng_meta,
            "parts": sorted(parts),
            "versions": library_versions(),
        }
        atomic_write_json(staging / STATE, full_state)
        if final.exists():  # an epoch re-run after resuming from an older checkpoint
            shutil.rmtree(final)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_json(
        checkpoints_dir / LATEST, {"checkpoint": final.name, "epoch": epoch, "done": state.get("done", False)}
    )
    _prune(checkpoints_dir, 1 if weights_only else keep_last, keep=final.name)
    if optimizer_in_newest_only:
        for older in sorted(checkpoints_dir.glob("epoch-*")):
            if older.is_dir() and older.name != final.name:
                _drop_optimizer_state(older)
    return final


def _drop_optimizer_state(folder: Path) -> None:
    """state.json says so first (atomically), then the file goes: a crash in between leaves a folder that
    reads as weights-only with a stray file, never one that claims state it lacks."""
    path = folder / "optimizer.safetensors"
    if not path.exists():
        return
    state = json.loads((folder / STATE).read_text())
    atomic_write_json(folder / STATE, {**state, "optimizer": None, "optimizer_dropped": True})
    path.unlink()


def _prune(checkpoints_dir: Path, keep_last: int, keep: str) -> None:
    folders = sorted(path for path in checkpoints_dir.glob("epoch-*") if path.is_dir())
    for old in folders[:-keep_last] if keep_last > 0 else []:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The folder latest.json points at, or None when the run has no checkpoint yet."""
    pointer = checkpoints_dir / LATEST
    if not pointer.is_file():
        return None
    folder = checkpoints_dir / json.loads(pointer.read_text())["checkpoint"]
    if not folder.is_dir():
        raise FileNotFoundError(f"{pointer} points at {folder.name}, which is missing; the run folder was edited")
    return folder


def read_checkpoint(folder: Path, parts: dict[str, nn.Module]) -> tuple[dict, dict | None]:
    """Load each part's weights; return (state.json contents, optimizer state_dict, or None for a finished
    stage that kept its weights only). RNG is restored separately."""
    state = json.loads((folder / STATE).read_text())
    for name, module in parts.items():
        load_module_weights(module, folder / f"{name}.safetensors")
    if state.get("optimizer") is None and state.get("done"):
        return state, None
    if state.get("optimizer") is None:
        raise ValueError(
            f"{folder}: this checkpoint kept its weights only (the optimizer state lives in the newest checkpoint "
            "only; train.keep_optimizer_state: all keeps it in every one), so training cannot resume from it"
        )
    optimizer_state = join_optimizer_state(load_file(str(folder / "optimizer.safetensors")), state["optimizer"])
    return state, optimizer_state


def restore_checkpoint_rng(folder: Path) -> None:
    state = json.loads((folder / STATE).read_text())
    restore_rng_states(load_file(str(folder / "rng.safetensors")), state["rng"])
