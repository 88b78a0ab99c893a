"""distill: knowledge distillation for PyTorch.

The library in one breath: a :class:`Distiller` composes a frozen teacher, a student and
named losses into one objective; a :class:`Trainer` optimises it with Accelerate, checkpoints
every epoch and resumes exactly; recipes (``distill run recipe.yaml``) drive the same pieces.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public names, imported on first use so that `import distill.losses` stays light.
_EXPORTS = {
    "Capture": "distill.capture",
    "Distiller": "distill.core.distiller",
    "FeatureMatch": "distill.core.distiller",
    "SupervisedObjective": "distill.core.distiller",
    "Schedule": "distill.core.schedules",
    "Trainer": "distill.train",
    "TrainSettings": "distill.train.settings",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'distill' has no attribute {name!r}")
