"""What a strategy returns: one :class:`Row` per trained model and seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn


@dataclass
class Row:
    """One trained model of a run, for one seed: what it is (``role``, and ``index`` for peers, exits,
    generations and assistants), its score, the model itself and its weights file. The runner measures
    parameters, size and latency from ``model``; rows of one (role, index) over seeds form a table row."""

    role: str
    seed: int
    score: float
    model: nn.Module
    index: int | None = None
    weights: Path | None = None
