"""Model kinds, each a spec beside its builder, found by registry (``build_model(spec, context)``).

Importing this package registers the built-in kinds: mlp, cnn, cnn1d, tree, multi_exit, hf (transformers
imported only when one is built), causal_lm and python (the user's own factory).
"""

from distill.models import causal_lm, factory, multi_exit  # noqa: F401  (register causal_lm, python, multi_exit)
from distill.models.cnn1d import CNN1dSpec, SmallCNN1d
from distill.models.hf.spec import HFSpec
from distill.models.mlp import MLP, CNNSpec, MLPSpec, SmallCNN
from distill.models.registry import (
    AnyModelSpec,
    ModelContext,
    ModelSpec,
    build_model,
    count_parameters,
    kinds,
    model_spec,
    register_factory,
    register_model,
    spec_class,
    unregister_model,
)
from distill.models.soft_tree import SoftDecisionTree
from distill.models.soft_tree_objective import SoftTreeObjective, TreeSpec

__all__ = [
    "MLP",
    "AnyModelSpec",
    "CNN1dSpec",
    "CNNSpec",
    "HFSpec",
    "MLPSpec",
    "ModelContext",
    "ModelSpec",
    "SmallCNN",
    "SmallCNN1d",
    "SoftDecisionTree",
    "SoftTreeObjective",
    "TreeSpec",
    "build_model",
    "count_parameters",
    "kinds",
    "model_spec",
    "register_factory",
    "register_model",
    "spec_class",
    "unregister_model",
]
