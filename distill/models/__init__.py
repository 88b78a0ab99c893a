"""Model builders for students and teachers."""

from distill.models.build import ModelSpec, build_model, count_parameters
from distill.models.mlp import MLP, SmallCNN, apply_max_norm

__all__ = ["MLP", "ModelSpec", "SmallCNN", "apply_max_norm", "build_model", "count_parameters"]
