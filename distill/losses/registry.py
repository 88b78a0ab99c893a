"""Loss registry: recipes refer to losses by short name (``loss: kd``)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TypeVar

LossFn = TypeVar("LossFn", bound=Callable)

_REGISTRY: dict[str, Callable] = {}


class UnknownLossError(KeyError):
    """Raised for a loss name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


def register(name: str) -> Callable[[LossFn], LossFn]:
    """Register a loss function (or loss class) under ``name``; returns it unchanged."""

    def decorator(fn: LossFn) -> LossFn:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name].__qualname__}")
        _REGISTRY[name] = fn
        return fn

    return decorator


def names() -> list[str]:
    """All registered loss names, sorted."""
    return sorted(_REGISTRY)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown <kind> 'x'; known: a, b (did you mean 'y'?)' — shared by every name lookup."""
    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    message = f"unknown {kind} {name!r}; known {plural}: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message


def get(name: str) -> Callable:
    """Return the loss registered as ``name``; an unknown name lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLossError(unknown_name_message("loss", name, names())) from None
