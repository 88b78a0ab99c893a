"""The NaN guard: a loss, weight or evaluation loss that is not finite stops the run before anything is
written, so the newest checkpoint on disk is always a good one."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    """A loss, weight or evaluation loss became NaN or inf; training stopped and no checkpoint was written."""


ADVICE = "Lower optimizer.lr, set train.grad_clip, or check the inputs for NaN, then resume with --resume."


def _where(last_good: Path | None) -> str:
    return f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"


def non_finite_loss(values: dict[str, float], epoch: int, step: int, last_good: Path | None) -> NonFiniteLossError:
    terms = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
    return NonFiniteLossError(
        f"loss is not finite at optimizer step {step} (epoch {epoch}): {terms}; training stopped and "
        f"{_where(last_good)}. {ADVICE}"
    )


def first_non_finite_weight(parts: dict[str, nn.Module]) -> str | None:
    """The name of the first parameter or floating buffer holding NaN or inf, or None."""
    for part, module in parts.items():
        for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                return f"{part}.{name}" if part != "model" else name
    return None


def check_before_checkpoint(
    parts: dict[str, nn.Module], record: dict, epoch: int, step: int, last_good: Path | None
) -> None:
    """Raise NonFiniteLossError when a weight or the epoch's train/eval loss is not finite."""
    weight = first_non_finite_weight(parts)
    losses = {name: record[name] for name in ("train_loss", "eval_loss") if name in record}
    bad_losses = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if weight is None and not bad_losses:
        return
    what = f"weight {weight!r} is not finite" if weight else ""
    if bad_losses:
        terms = ", ".join(f"{name}={value:.4g}" for name, value in bad_losses.items())
        what = f"{what}{'; ' if what else ''}{terms}"
    raise NonFiniteLossError(
        f"at the end of epoch {epoch} (optimizer step {step}) {what}; training stopped, this epoch's checkpoint "
        f"was not written and {_where(last_good)}. {ADVICE}"
    )
