"""Ways to run teachers and students beyond one frozen teacher: ensembles, chains, module replacement,
mutual learning, self-distillation and soft-decision-tree students."""

from distill.strategies.chain import ChainStep, run_chain
from distill.strategies.ensemble import EnsembleTeacher
from distill.strategies.mutual import MutualObjective, PeerGroup
from distill.strategies.self_distill import (
    MultiExitNetwork,
    SelfDistillationObjective,
    multi_exit_cnn1d,
    multi_exit_mlp,
)
from distill.strategies.soft_tree import SoftTreeObjective

__all__ = [
    "ChainStep",
    "EnsembleTeacher",
    "MultiExitNetwork",
    "MutualObjective",
    "PeerGroup",
    "SelfDistillationObjective",
    "SoftTreeObjective",
    "multi_exit_cnn1d",
    "multi_exit_mlp",
    "run_chain",
]
