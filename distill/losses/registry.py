"""Loss registry: recipes refer to losses by short name (``loss: kd``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from distill.names import unknown_name_message

LossFn = TypeVar("LossFn", bound=Callable)

_REGISTRY: dict[str, Callable] = {}
_INFO: dict[str, LossInfo] = {}

Stage = Literal["main", "pretrain", "both"]


@dataclass(frozen=True)
class LossInfo:
    """How the Distiller calls a registered loss.

    * ``layer_lists``: the loss takes *lists* of feature tensors (all layers of a match at once,
      e.g. FSP's Gram matrices between consecutive layers) instead of one student/teacher pair.
    * ``stage``: when its term is trained by default. ``pretrain`` terms are optimised alone in a
      stage before distillation (RepDistiller's init stage for AB and FSP), ``both`` in that stage
      and in distillation, ``main`` only in distillation. A recipe may override it per match.
    * ``pretrain_epochs``: the default length of that stage.
    """

    layer_lists: bool = False
    stage: Stage = "main"
    pretrain_epochs: int = 0


class UnknownLossError(KeyError):
    """Raised for a loss name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


def register(
    name: str, *, layer_lists: bool = False, stage: Stage = "main", pretrain_epochs: int = 0
) -> Callable[[LossFn], LossFn]:
    """Register a loss function (or :class:`~distill.methods.base.MethodLoss` class) under ``name``.

    Returns it unchanged; the keyword arguments become its :class:`LossInfo`.
    """

    def decorator(fn: LossFn) -> LossFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = fn
        _INFO[name] = LossInfo(layer_lists=layer_lists, stage=stage, pretrain_epochs=pretrain_epochs)
        return fn

    return decorator


def names() -> list[str]:
    """All registered loss names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Callable:
    """Return the loss registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLossError(unknown_name_message("loss", name, names())) from None


def info(name: str) -> LossInfo:
    """How the loss registered as ``name`` is called (see :class:`LossInfo`)."""
    get(name)  # an unknown name raises with the known names
    return _INFO[name]
