"""Training: the Accelerate loop, its settings, verified checkpoints and progress display."""

from distill.train.settings import TrainSettings
from distill.train.trainer import NonFiniteLossError, Trainer, evaluate

__all__ = ["NonFiniteLossError", "TrainSettings", "Trainer", "evaluate"]
