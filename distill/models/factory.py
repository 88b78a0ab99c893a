"""``kind: python``: the user's own network, from a factory named by import path.

    model: {kind: python, factory: "mypackage.models:resnet8", options: {width: 16}}

calls ``mypackage.models.resnet8(width=16)``, adding ``num_classes`` and ``input_shape`` when the function
takes them. The module is imported from the Python path (the working directory included), so a file
``mymodels.py`` next to the recipe works as ``factory: "mymodels:resnet8"``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from torch import nn

from distill.models.registry import Inputs, ModelContext, ModelSpec, call_factory, register_model


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """``"package.module:function"`` -> the function; every failure says what was looked for."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"factory {path!r} must look like 'package.module:function'")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))  # a models file next to the recipe
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"factory {path!r}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        names = sorted(name for name in vars(module) if callable(vars(module)[name]) and not name.startswith("_"))
        raise ValueError(f"factory {path!r}: module {module_name!r} has no function {attribute!r}; it has {names}")
    return function


@register_model("python")
class PythonSpec(ModelSpec):
    """A network from the user's factory function (see the module docstring)."""

    inputs: ClassVar[Inputs] = "any"
    kind: Literal["python"] = "python"
    factory: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("factory")
    @classmethod
    def _importable(cls, value: str) -> str:
        resolve_factory(value)  # a typo fails at validation, before any training
        return value

    def build(self, context: ModelContext) -> nn.Module:
        return call_factory(resolve_factory(self.factory), self.options, context)
