"""Spec classes found by their ``kind`` (timm's registry pattern), shared by model kinds and strategies.

A base pydantic spec declares ``kind``; subclasses register under the value their ``kind`` defaults to,
and validating a mapping against the base validates it against the subclass its ``kind`` names, so
an unknown kind lists the registered ones and a field of another kind is an unknown key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from distill.names import unknown_name_message

Spec = TypeVar("Spec", bound=type[BaseModel])


class KindRegistry(Generic[Spec]):
    """The spec classes of one family (``what``: "model kind", "strategy kind"), by kind."""

    def __init__(self, what: str, default: str) -> None:
        self.what, self.default = what, default
        self._specs: dict[str, Any] = {}

    def register(self, kind: str) -> Callable[[Spec], Spec]:
        """Register a spec class under ``kind`` (its ``kind`` field must default to it)."""

        def decorator(spec: Spec) -> Spec:
            default = spec.model_fields["kind"].default
            if default != kind:
                raise ValueError(f"{spec.__name__}: its kind field must default to {kind!r}, got {default!r}")
            if kind in self._specs and self._specs[kind] is not spec:
                raise ValueError(f"{self.what} {kind!r} is already registered to {self._specs[kind].__name__}")
            self._specs[kind] = spec
            return spec

        return decorator

    def unregister(self, kind: str) -> None:
        """Forget a kind (tests that register a toy kind clean up with this)."""
        self._specs.pop(kind, None)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def get(self, kind: str) -> Spec:
        if kind not in self._specs:
            raise ValueError(unknown_name_message(self.what, kind, self.names()))
        return self._specs[kind]

    def validate_by_kind(self, base: type[BaseModel], cls: type, value: Any, handler: Callable[[Any], Any]) -> Any:
        """The body of the base's ``mode="wrap"`` model validator: subclasses and built specs validate as
        usual; a mapping validated against ``base`` itself goes to the class its ``kind`` names."""
        if cls is not base or isinstance(value, base):
            return handler(value)
        if not isinstance(value, dict):
            family = self.what.split()[0]
            raise ValueError(f"a {family} is a mapping with a kind (one of {self.names()}), got {value!r}")
        kind = value.get("kind", self.default)
        if not isinstance(kind, str):
            raise ValueError(f"kind must be a name, one of {self.names()}; got {kind!r}")
        return self.get(kind).model_validate(value)
