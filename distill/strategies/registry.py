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
from typing import TYPE_CHECKING, Any

from pydantic import SerializeAsAny, model_validator

from distill.kinds import KindRegistry
from distill.sections import RecipeSection
from distill.strategies.rows import Row

if TYPE_CHECKING:
    from distill.strategies.context import RunContext

DEFAULT_STRATEGY = "offline"


class StrategySpec(RecipeSection):
    """Base of every strategy's spec; validating a mapping against it picks the registered subclass."""

    kind: str = DEFAULT_STRATEGY

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        return _STRATEGIES.validate_by_kind(StrategySpec, cls, value, handler)

    def check(self, recipe: Any) -> None:
        """Raise ValueError when the recipe's other sections do not fit this strategy."""

    def preflight(self, context: RunContext) -> None:
        """Build the models and objectives on untrained weights, so a bad layer name or shape fails before
        any training. The default checks the recipe's distillation from teacher to student."""
        context.check_distillation()

    def run(self, context: RunContext) -> list[Row]:
        raise NotImplementedError(f"strategy {self.kind!r} has no run()")


AnyStrategySpec = SerializeAsAny[StrategySpec]
_STRATEGIES: KindRegistry[type[StrategySpec]] = KindRegistry("strategy kind", DEFAULT_STRATEGY)
register_strategy = _STRATEGIES.register  # @register_strategy("mutual") on a StrategySpec subclass
unregister_strategy = _STRATEGIES.unregister
strategy_names = _STRATEGIES.names
strategy_class = _STRATEGIES.get
