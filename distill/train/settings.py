"""How a model is trained: the ``train:`` section of a recipe, validated by pydantic.

Kept apart from ``train.py`` so the recipe layer (``config.py``) and the loop share one definition.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from distill.sections import RecipeSection


class StrictModel(RecipeSection):
    """Every recipe section rejects unknown keys (a typo is an error, not a silently ignored setting),
    non-finite numbers and booleans where numbers belong (distill.sections)."""


class OptimizerSettings(StrictModel):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)  # above 10 every optimizer here diverges: a typo, not a setting
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = Field(0.0, ge=0, le=1)  # more than 1 would shrink weights faster than they learn
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)  # adam(w)


class LRScheduleSettings(StrictModel):
    """Learning-rate multiplier per optimizer step: linear warm-up, then a decay to ``final_factor``."""

    name: Literal["constant", "linear", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    final_factor: float = Field(0.0, ge=0, le=1)  # linear / cosine: lr at the last step, relative to lr
    # step: fractions of the run (0..1) at which lr is multiplied by gamma
    milestones: list[float] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)  # step: the lr multiplier at each milestone (above 1 it would grow)

    @model_validator(mode="after")
    def _milestones_are_fractions(self) -> LRScheduleSettings:
        if any(not 0 < value < 1 for value in self.milestones):
            raise ValueError(f"milestones must be fractions of the run between 0 and 1, got {self.milestones}")
        return self

    def factor(self, step: int, total_steps: int) -> float:
        """The lr multiplier at optimizer step ``step`` (0-based) of ``total_steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, total_steps - self.warmup_steps))
        if self.name == "linear":
            return 1.0 - (1.0 - self.final_factor) * progress
        if self.name == "cosine":
            return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.name == "step":
            passed = sum(step >= fraction * total_steps for fraction in self.milestones)
            return self.gamma**passed
        return 1.0


class FsdpSettings(StrictModel):
    """``train.fsdp``: shard the trained modules' weights, gradients and optimizer state over the processes
    (PyTorch FSDP2 through Accelerate) instead of keeping a whole replica in each (DDP).

    Each module whose class is named in ``wrap`` becomes one sharded unit (its weights are gathered just for
    its forward and backward); by default the model's own ``_no_split_modules`` (a transformer's layers),
    else every module class of which some module holds at least ``min_params`` parameters. Checkpoints hold
    whole weights, as without FSDP.
    """

    wrap: list[str] | None = None
    min_params: int = Field(100_000, ge=1)
    reshard_after_forward: bool = True  # free the gathered weights after each unit's forward (least memory)
    cpu_offload: bool = False  # keep the shards in host memory between uses (accelerators only)


class TrainSettings(StrictModel):
    """Everything the Trainer needs besides the objective and the data."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    optimizer: OptimizerSettings = OptimizerSettings()
    lr_schedule: LRScheduleSettings = LRScheduleSettings()
    grad_clip: float | None = Field(None, gt=0)  # max global grad norm
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    grad_accum_steps: int = Field(1, ge=1)
    max_norm: float | None = Field(None, gt=0)  # max-norm constraint on hidden units (Hinton et al. 2015)
    jitter: int = Field(0, ge=0)  # random shift of input images by up to this many pixels
    log_every: int = Field(50, ge=1)  # optimizer steps between step records in metrics.jsonl
    keep_checkpoints: int = Field(2, ge=1)
    # a step checkpoint every this many optimizer steps inside an epoch: a killed run resumes mid-epoch
    # exactly (same final weights); None: only at the end of each epoch (and on SIGTERM/SIGINT)
    checkpoint_every_steps: int | None = Field(None, ge=1)
    # a finished stage keeps only its final weights (no optimizer or RNG state, no older epochs): a run
    # folder that fits on a laptop; "all" keeps every kept checkpoint whole
    keep_when_done: Literal["weights", "all"] = "weights"
    # "all": every kept checkpoint can be resumed from, so a damaged newest one falls back to the one before;
    # "newest": older ones drop their optimizer state (Adam: twice the weights) and keep weights only
    keep_optimizer_state: Literal["newest", "all"] = "all"
    cpu: bool = False  # force CPU even when an accelerator is present
    # recompute the activations of Hugging Face models' layers in the backward pass instead of keeping them:
    # less memory, more time (transformers' gradient_checkpointing_enable, use_reentrant=False)
    gradient_checkpointing: bool = False
    # FSDP2 for students too large for one device's replica (several processes only; see FsdpSettings)
    fsdp: FsdpSettings | None = None
    # experiment tracking through Accelerate's trackers: step and epoch records also go to
    # <stage>/tensorboard (view with `tensorboard --logdir RUN_DIR`)
    log_with: Literal["tensorboard"] | None = None

    @model_validator(mode="after")
    def _tracker_installed(self) -> TrainSettings:
        if self.log_with == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError(
                "log_with: tensorboard needs the tensorboard package, which is not installed: "
                "pip install 'distill[tensorboard]' (or pip install tensorboard)"
            )
        return self
