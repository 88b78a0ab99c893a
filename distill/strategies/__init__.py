"""Strategies: how teachers and students are run, one file each, found by registry.

Importing this package registers the built-in ones: offline (with ensemble teachers, transfer sets and
teacher-assistant chains), mutual (DML), self_distill (BYOT), born_again, theseus, and for causal LMs
seq_kd (sequence-level KD) and on_policy (GKD).
"""

from distill.strategies import born_again, offline, on_policy, seq_kd, theseus  # noqa: F401  (register them)
from distill.strategies.chain import ChainStep, run_chain
from distill.strategies.context import RunContext, TeacherModel
from distill.strategies.ensemble import EnsembleSpec, EnsembleTeacher
from distill.strategies.mutual import MutualLearning, MutualObjective, PeerGroup
from distill.strategies.registry import (
    AnyStrategySpec,
    Row,
    StrategySpec,
    register_strategy,
    strategy_class,
    strategy_names,
    unregister_strategy,
)
from distill.strategies.self_distill import BeYourOwnTeacher, SelfDistillationObjective
from distill.strategies.transfer import TransferSpec

__all__ = [
    "AnyStrategySpec",
    "BeYourOwnTeacher",
    "ChainStep",
    "EnsembleSpec",
    "EnsembleTeacher",
    "MutualLearning",
    "MutualObjective",
    "PeerGroup",
    "Row",
    "RunContext",
    "SelfDistillationObjective",
    "StrategySpec",
    "TeacherModel",
    "TransferSpec",
    "register_strategy",
    "run_chain",
    "strategy_class",
    "strategy_names",
    "unregister_strategy",
]
