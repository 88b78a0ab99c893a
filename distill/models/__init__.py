"""Model builders for students and teachers."""

from distill.models.build import ModelSpec, build_model, count_parameters
from distill.models.cnn1d import SmallCNN1d
from distill.models.mlp import MLP, SmallCNN, apply_max_norm
from distill.models.soft_tree import SoftDecisionTree

__all__ = [
    "MLP",
    "ModelSpec",
    "SmallCNN",
    "SmallCNN1d",
    "SoftDecisionTree",
    "apply_max_norm",
    "build_model",
    "count_parameters",
]
