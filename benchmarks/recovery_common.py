"""What the compression-with-recovery benchmarks share: apply one compression step to a trained model,
measure it as it is, then after fine-tuning on labels and after distillation from the model before the
step, each from the same compressed starting point; a row records accuracy and size of all three."""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from benchmarks.nlp_common import mean_std
from distill.compress.base import CompressState, CompressStep
from distill.compress.recover import train_recovery
from distill.compress.sparse_io import save_compressed

RECOVERIES = ("none", "labels", "distilled")  # no recovery; fine-tuned on labels; distilled from the model before


def size_of(model: nn.Module) -> dict[str, int]:
    """Parameters, non-zero parameters and bytes of the weights file (pruned and clustered tensors
    stored compressed, as the compress pipeline writes them)."""
    with tempfile.TemporaryDirectory() as folder:
        size = save_compressed(model.state_dict(), Path(folder) / "model.safetensors")
    parameters = list(model.parameters())
    return {
        "parameters": sum(p.numel() for p in parameters),
        "nonzero": sum(int(p.count_nonzero()) for p in parameters),
        "bytes": size,
    }


def compressed_and_recovered(
    state: CompressState,
    step: CompressStep,
    epochs: int,
    lr: float,
    score: Callable[[nn.Module], float],
) -> tuple[dict[str, Any], nn.Module]:
    """Apply ``step`` to ``state.model`` and score it unrecovered, then recovered both ways for ``epochs``
    epochs at ``lr`` (each from a copy of the compressed model, so the two recoveries are comparable);
    the result and the compressed model (unrecovered)."""
    step.apply(state, 1)
    found: dict[str, Any] = {"size": size_of(state.model), "accuracy": {"none": score(state.model)}}
    for index, how in enumerate(RECOVERIES[1:], start=2):
        copied = dataclasses.replace(
            state, model=copy.deepcopy(state.model), masks=dict(state.masks), clusters=dict(state.clusters)
        )
        teacher = copied.before if how == "distilled" else None
        folder = copied.step_folder(index, f"recover-{how}")  # its number seeds the recovery's data order
        train_recovery(copied, teacher, folder, f"{how} s{state.seed}", epochs, lr)
        found["accuracy"][how] = score(copied.model)
    return found, state.model


def record(rows: dict, name: str, seed: int, found: dict[str, Any]) -> None:
    """Keep one seed's result of the row ``name`` (sizes are the same for every seed up to rounding)."""
    entry = rows.setdefault(name, {"accuracy": {}})
    entry["size"] = found["size"]
    for how, value in found["accuracy"].items():
        entry["accuracy"].setdefault(how, {})[str(seed)] = value


def cell(values: dict[str, float]) -> str:
    return "{:.2f} ± {:.2f}".format(*mean_std(list(values.values()))) if values else "–"


def recovery_table(rows: dict, reference: float) -> str:
    """One line per row: size, and test accuracy without recovery, fine-tuned on labels, distilled."""
    lines = [
        "| model | parameters | non-zero | KB on disk | smaller than dense "
        "| no recovery | fine-tuned on labels | distilled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in rows.items():
        size, accuracy = entry["size"], entry["accuracy"]
        cells = [cell(accuracy.get(how, {})) for how in RECOVERIES]
        lines.append(
            f"| {name} | {size['parameters']:,} | {size['nonzero']:,} | {size['bytes'] / 1024:,.0f} | "
            f"{reference / size['bytes']:.1f}x | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)
