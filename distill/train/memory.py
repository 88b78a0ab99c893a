"""Memory savers a recipe switches on for the trained models: gradient checkpointing
(``train.gradient_checkpointing``).

bf16 needs nothing here: ``train.mixed_precision: bf16`` runs the forward passes under Accelerate's autocast
(on CPU too, where torch autocasts matrix products to bfloat16).
"""

from __future__ import annotations

from torch import nn


def enable_gradient_checkpointing(module: nn.Module) -> list[str]:
    """Switch on gradient checkpointing (non-reentrant) in every Hugging Face model inside ``module``; return
    their module names. A module holding none is refused: the others have no layers to recompute."""
    enabled: list[str] = []
    for name, part in module.named_modules():
        if any(done == "" or name.startswith(f"{done}.") for done in enabled):
            continue  # inside a model already switched on
        if getattr(part, "supports_gradient_checkpointing", False) and hasattr(part, "gradient_checkpointing_enable"):
            part.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled.append(name)
    if not enabled:
        raise ValueError(
            f"train.gradient_checkpointing needs a Hugging Face model to recompute layers of, and the trained "
            f"{type(module).__name__} holds none; drop the setting (or train a transformers model)"
        )
    return enabled
