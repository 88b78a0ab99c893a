"""Strategies by registry: how teachers and students are run, one file per strategy.

A strategy is a pydantic spec (its recipe fields) with a ``check(recipe)`` for the rules that span
recipe sections and a ``run(context) -> rows``::

    @register_strategy("mutual")
    class MutualLearning(StrategySpec):
        kind: Literal["mutual"] = "mutual"
        peers: int = 2

        def run(self, context: RunContext) -> list[Row]: ...

``strategy:`` in a recipe validates against the spec its ``kind`` names (default ``offline``); an unknown
kind lists the registered ones, a field of another kind is an unknown key with the allowed ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, SerializeAsAny, model_validator
from torch import nn

from distill.names import unknown_name_message

if TYPE_CHECKING:
    from distill.strategies.context import RunContext

DEFAULT_STRATEGY = "offline"


@dataclass
class Row:
    """One trained model of a run, for one seed: what it is (``role``, and ``index`` for peers, exits,
    generations and assistants), its score, the model itself and its weights file. The runner measures
    parameters, size and latency from ``model``; rows of one (role, index) over seeds form a table row."""

    role: str
    seed: int
    score: float
    model: nn.Module
    index: int | None = None
    weights: Path | None = None


class StrategySpec(BaseModel):
    """Base of every strategy's spec; validating a mapping against it picks the registered subclass."""

    model_config = ConfigDict(extra="forbid")
    kind: str = DEFAULT_STRATEGY

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if cls is not StrategySpec or isinstance(value, StrategySpec):
            return handler(value)
        if not isinstance(value, dict):
            raise ValueError(f"a strategy is a mapping with a kind (one of {strategy_names()}), got {value!r}")
        return strategy_class(value.get("kind", DEFAULT_STRATEGY)).model_validate(value)

    def check(self, recipe: Any) -> None:
        """Raise ValueError when the recipe's other sections do not fit this strategy."""

    def preflight(self, context: RunContext) -> None:
        """Build the models and objectives on untrained weights, so a bad layer name or shape fails before
        any training. The default checks the recipe's distillation from teacher to student."""
        context.check_distillation()

    def run(self, context: RunContext) -> list[Row]:
        raise NotImplementedError(f"strategy {self.kind!r} has no run()")


AnyStrategySpec = SerializeAsAny[StrategySpec]
SpecType = TypeVar("SpecType", bound=type[StrategySpec])
_STRATEGIES: dict[str, type[StrategySpec]] = {}


def register_strategy(kind: str) -> Callable[[SpecType], SpecType]:
    """Register a :class:`StrategySpec` subclass under ``kind`` (its ``kind`` field must default to it)."""

    def decorator(spec: SpecType) -> SpecType:
        default = spec.model_fields["kind"].default
        if default != kind:
            raise ValueError(f"strategy {spec.__name__}: its kind field must default to {kind!r}, got {default!r}")
        if kind in _STRATEGIES and _STRATEGIES[kind] is not spec:
            raise ValueError(f"strategy {kind!r} is already registered to {_STRATEGIES[kind].__name__}")
        _STRATEGIES[kind] = spec
        return spec

    return decorator


def unregister_strategy(kind: str) -> None:
    _STRATEGIES.pop(kind, None)


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def strategy_class(kind: str) -> type[StrategySpec]:
    if kind not in _STRATEGIES:
        raise ValueError(unknown_name_message("strategy kind", kind, strategy_names()))
    return _STRATEGIES[kind]
