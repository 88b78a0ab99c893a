"""Model kinds by registry: each kind's pydantic spec sits beside its builder (timm's ``register_model``).

A spec class names its ``kind`` and builds the network from a :class:`ModelContext` (what the task knows:
input shape, number of classes, the kind of head, the model a student is shrunk from)::

    @register_model("mlp")
    class MLPSpec(ModelSpec):
        kind: Literal["mlp"] = "mlp"
        hidden: list[int] = [128]

        def build(self, context: ModelContext) -> nn.Module:
            return MLP(context.input_shape, self.hidden, context.num_classes)

A recipe's ``model:`` block validates against the spec its ``kind`` names (default ``mlp``); an unknown
kind lists the registered ones. :func:`register_factory` turns a plain Python function into a kind.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, model_validator
from torch import nn

from distill.kinds import KindRegistry
from distill.sections import RecipeSection

DEFAULT_KIND = "mlp"
Inputs = Literal["tensor", "tokens", "any"]


@dataclass
class ModelContext:
    """What a builder may use. Tensor tasks give ``input_shape``; text tasks give ``head`` (``sequence`` or
    ``token``) and ``label_names``. ``source`` is the model a student is derived from (a shrunk transformer
    copies its layers), or None; ``seed`` initialises whatever is new."""

    num_classes: int
    input_shape: tuple[int, ...] | None = None
    head: str | None = None
    label_names: Sequence[str] | None = None
    source: nn.Module | None = None
    seed: int = 0

    def tensor_shape(self, kind: str) -> tuple[int, ...]:
        """The input shape a tensor model needs; a text task has none, which the error says."""
        if self.input_shape is None:
            raise ValueError(f"model kind {kind!r} reads tensors of a fixed shape; this task gives none (use kind hf)")
        return self.input_shape


class ModelSpec(RecipeSection):
    """Base of every model kind's spec. Validating a mapping against ``ModelSpec`` picks the registered
    subclass by ``kind``; subclasses implement :meth:`build` and say which ``inputs`` they read."""

    inputs: ClassVar[Inputs] = "tensor"
    kind: str = DEFAULT_KIND

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        return _KINDS.validate_by_kind(ModelSpec, cls, value, handler)

    def build(self, context: ModelContext) -> nn.Module:
        raise NotImplementedError(f"model kind {self.kind!r} has no builder")

    def objective(self, model: nn.Module, teacher: nn.Module | None, distill: Any) -> Any:
        """The objective this kind trains on, or None for the usual ones (labels, or the recipe's Distiller).
        ``distill`` is the recipe's ``distill:`` block."""
        return None

    def trained_weights(self, context: ModelContext) -> Path | None:
        """The weights of a model this spec loads already trained for the task (a user's fine-tuned
        classifier): a teacher then is not trained unless the recipe gives ``teacher.train``. None here."""
        return None

    def write_artefacts(self, model: nn.Module, inputs: Any, run_dir: Path) -> None:
        """Write pictures or files about a trained model into its run folder (``inputs``: test inputs)."""

    def same_architecture(self, other: ModelSpec) -> bool:
        return self.model_dump() == other.model_dump()


AnyModelSpec = SerializeAsAny[ModelSpec]  # dumps the subclass's fields, not only the base's
_KINDS: KindRegistry[type[ModelSpec]] = KindRegistry("model kind", DEFAULT_KIND)
register_model = _KINDS.register  # @register_model("mlp") on a ModelSpec subclass
unregister_model = _KINDS.unregister
kinds = _KINDS.names
spec_class = _KINDS.get


def model_spec(kind: str = DEFAULT_KIND, **fields: Any) -> ModelSpec:
    """The spec of ``kind`` with ``fields`` (validated), e.g. ``model_spec("cnn1d", channels=[8, 16])``."""
    return spec_class(kind).model_validate({"kind": kind, **fields})


def build_model(spec: ModelSpec, context: ModelContext) -> nn.Module:
    """A fresh model (seed torch first for a reproducible initialisation of tensor models)."""
    return spec.build(context)


def _accepted(function: Callable, offered: dict[str, Any]) -> dict[str, Any]:
    """The offered keyword arguments that ``function`` takes (all of them if it has ``**kwargs``)."""
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return offered
    return {name: value for name, value in offered.items() if name in parameters}


def call_factory(function: Callable[..., nn.Module], options: dict[str, Any], context: ModelContext) -> nn.Module:
    """``function(**options)`` plus whichever of ``num_classes``, ``input_shape`` it accepts (options win)."""
    offered = {"num_classes": context.num_classes, "input_shape": context.input_shape}
    model = function(**{**_accepted(function, offered), **options})
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {function.__qualname__} returned {type(model).__name__}, not an nn.Module")
    return model


def register_factory(kind: str, function: Callable[..., nn.Module], inputs: Inputs = "any") -> type[ModelSpec]:
    """Make a plain function a model kind: ``model: {kind: <kind>, options: {...}}`` calls ``function(**options)``
    (plus ``num_classes``/``input_shape`` if it takes them). Returns the spec class it registered."""
    spec = type(
        f"{kind.title().replace('_', '')}Spec",
        (FactorySpec,),
        {
            "__annotations__": {"kind": Literal[kind]},  # type: ignore[valid-type]
            "kind": kind,
            "inputs": inputs,
            "function": staticmethod(function),
        },
    )
    return register_model(kind)(spec)


class FactorySpec(ModelSpec):
    """Base of kinds made by :func:`register_factory`: keyword ``options`` for the function."""

    function: ClassVar[Callable[..., nn.Module]]
    options: dict[str, Any] = Field(default_factory=dict)

    def build(self, context: ModelContext) -> nn.Module:
        return call_factory(type(self).function, self.options, context)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())
