"""Which checkpoint a run resumes from, and reading it: every file is verified against the sha256 that
``state.json`` recorded before anything is loaded, so a truncated, garbled or edited checkpoint is skipped
(with the reason said) for the newest older one that verifies, never loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from distill.train.atomic import DamagedFileError, read_json
from distill.train.checkpoint import (
    LATEST,
    STATE,
    checkpoint_folders,
    join_optimizer_state,
    load_module_weights,
    sha256_of,
)
from distill.train.rng import restore_rng_states

REQUIRED_KEYS = ("epoch", "step", "parts", "done", "optimizer", "rng")  # what write_checkpoint always records


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong with it."""


@dataclass
class Resumable:
    folder: Path
    state: dict
    skipped: list[str] = field(default_factory=list)  # why newer checkpoints (or latest.json) were passed over


def verify_checkpoint(folder: Path, required: tuple[str, ...] = ()) -> dict:
    """``folder``'s state.json once every file it records matches its sha256 and it holds the
    ``required`` keys besides the usual ones (CheckpointError otherwise)."""
    state_path = folder / STATE
    if not state_path.is_file():
        raise CheckpointError(f"{state_path} is missing")
    try:
        state = read_json(state_path)
    except DamagedFileError as error:
        raise CheckpointError(str(error)) from None
    missing = [key for key in (*REQUIRED_KEYS, *required) if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{state_path} lacks {', '.join(map(repr, missing))}: it was edited or truncated")
    files = state.get("files") or {f"{part}.safetensors": None for part in state["parts"]}
    for name, digest in files.items():
        _verify_file(folder / name, digest)
    if state["optimizer"] is None and not state["done"]:
        raise CheckpointError(
            f"{folder} kept its weights only (train.keep_optimizer_state: newest drops the optimizer state of "
            "older checkpoints), so training cannot resume from it"
        )
    return state


def _verify_file(path: Path, digest: str | None) -> None:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if digest is None:  # a checkpoint written before checksums were recorded: the header must parse at least
        try:
            with safe_open(str(path), framework="pt"):
                return
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path} does not read as safetensors ({error})") from None
    if sha256_of(path) != digest:
        raise CheckpointError(
            f"{path} is damaged: its sha256 differs from the one state.json recorded "
            "(truncated, garbled or overwritten)"
        )


def _pointer_notes(checkpoints_dir: Path, folders: list[Path]) -> list[str]:
    """What is wrong with latest.json, if anything; the folders themselves decide what is resumed."""
    pointer = checkpoints_dir / LATEST
    if not pointer.exists():
        return [f"{pointer} is missing; the checkpoints were found by their folder names"] if folders else []
    try:
        name = read_json(pointer)["checkpoint"]
    except (DamagedFileError, KeyError, TypeError) as error:
        reason = str(error) if isinstance(error, DamagedFileError) else f"{pointer} has no 'checkpoint' entry"
        return [f"{reason}; the checkpoints were found by their folder names"]
    if not (checkpoints_dir / str(name)).is_dir():
        return [f"{pointer} points at {name}, which is missing (deleted?)"]
    return []


def find_resumable(
    checkpoints_dir: Path, choose: str | None = None, required: tuple[str, ...] = ()
) -> Resumable | None:
    """The newest checkpoint that verifies (or the one named by ``choose``, e.g. ``epoch-0002``), with the
    reasons newer ones were skipped; None when the stage has no checkpoint at all. ``required``: keys the
    caller's state.json must hold besides the usual ones."""
    folders = checkpoint_folders(checkpoints_dir)
    notes = _pointer_notes(checkpoints_dir, folders)
    if choose is not None:
        folder = checkpoints_dir / Path(choose).name
        if folder not in folders:
            names = ", ".join(path.name for path in folders) or "none"
            raise CheckpointError(f"--resume-from {choose}: {checkpoints_dir} has no such checkpoint (it has: {names})")
        return Resumable(folder, verify_checkpoint(folder, required), notes)
    if not folders:
        if notes:  # latest.json names a checkpoint that is gone, and nothing else is left
            raise CheckpointError(
                f"{notes[0]}, and no other checkpoint is left in {checkpoints_dir}; "
                f"delete {checkpoints_dir} to train this stage afresh"
            )
        return None
    skipped = list(notes)
    for folder in reversed(folders):
        try:
            return Resumable(folder, verify_checkpoint(folder, required), skipped)
        except CheckpointError as error:
            skipped.append(f"skipped {folder.name}: {error}")
    raise CheckpointError(
        f"no checkpoint in {checkpoints_dir} can be resumed from — {'; '.join(skipped)}. "
        f"Delete {checkpoints_dir} to train this stage afresh"
    )


def read_checkpoint(found: Resumable, parts: dict[str, nn.Module]) -> dict | None:
    """Load each part's weights from a verified checkpoint; return the optimizer state_dict, or None for a
    finished stage that kept its weights only. RNG is restored separately (restore_checkpoint_rng)."""
    for name, module in parts.items():
        load_module_weights(module, found.folder / f"{name}.safetensors")
    if found.state["optimizer"] is None:
        return None
    return join_optimizer_state(load_file(str(found.folder / "optimizer.safetensors")), found.state["optimizer"])


def restore_checkpoint_rng(found: Resumable) -> None:
    restore_rng_states(load_file(str(found.folder / "rng.safetensors")), found.state["rng"])


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest checkpoint folder that verifies, or None when the stage has none (CheckpointError when
    some exist but none verifies)."""
    found = find_resumable(checkpoints_dir)
    return found.folder if found else None
