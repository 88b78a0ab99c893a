"""What a strategy returns: one :class:`Row` per trained model and seed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    label: str | None = None  # the table label, when the (role, index) default does not say it (compress steps)
    details: dict[str, Any] = field(default_factory=dict)  # reported beside the table (an export's parity)
