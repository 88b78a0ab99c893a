"""The base of every recipe section (train, model kinds, strategies, compress steps, schedules): rules that
make nonsense settings an error with their key path instead of a run that trains on them.

* unknown keys are refused (a typo is an error, not a silently ignored setting);
* numbers are finite (``nan``, ``inf`` refused);
* a boolean is not a number: YAML's ``epochs: true`` would otherwise become 1.

Types for values that only make sense in a range live here too: layer sizes, temperatures and weights.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

SECTION_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

Size = Annotated[int, Field(ge=1)]  # a layer width, channel count or other count of things: at least 1


def non_empty_layer_name(name: str) -> str:
    """An empty module name would match the whole model; a name with spaces around it never matches."""
    if not name.strip():
        raise ValueError("a layer name must not be empty (it would name the whole model); see `distill inspect`")
    if name != name.strip():
        raise ValueError(f"layer name {name!r} has spaces around it")
    return name


LayerName = Annotated[str, AfterValidator(non_empty_layer_name)]  # a dotted module name


def non_empty_text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


Text = Annotated[str, AfterValidator(non_empty_text)]  # a file, folder, column or name: never "" or "  "


def _admits_bool(annotation: Any) -> bool:
    """Whether a field of this type may hold True/False (bool itself, Any, or a union or literal with one)."""
    if annotation is bool or annotation is Any or annotation is object:
        return True
    if isinstance(annotation, str):  # an unresolved forward reference: do not guess
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return any(isinstance(value, bool) for value in typing.get_args(annotation))
    if origin is Annotated:
        return _admits_bool(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_admits_bool(member) for member in typing.get_args(annotation))
    return False


def _item_type(annotation: Any) -> Any:
    """The element type of a list/tuple annotation (for a union, of its first list member), else None."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _item_type(typing.get_args(annotation)[0])
    if origin in (list, tuple, set, frozenset):
        args = [arg for arg in typing.get_args(annotation) if arg is not Ellipsis]
        return args[0] if args else Any
    if origin in (Union, types.UnionType):
        for member in typing.get_args(annotation):
            item = _item_type(member)
            if item is not None:
                return item
    return None


def reject_booleans(value: Any, annotation: Any) -> None:
    """Raise ValueError when ``value`` (or an item of a list of it) is a boolean where a number belongs."""
    if isinstance(value, bool) and not _admits_bool(annotation):
        raise ValueError(f"expected a number, not the boolean {str(value).lower()}")
    if isinstance(value, (list, tuple)):
        item = _item_type(annotation)
        if item is not None:
            for each in value:
                reject_booleans(each, item)


class RecipeSection(BaseModel):
    """A recipe section: unknown keys, non-finite numbers and booleans in number fields are refused."""

    model_config = SECTION_CONFIG

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            reject_booleans(value, field.annotation)
        return value


def _bounded(minimum: float, inclusive: bool, what: str):
    """A check of a number, or of every value a schedule takes, against a lower bound."""

    def check(value: Any) -> Any:
        values = value.values_taken() if hasattr(value, "values_taken") else [value]
        bad = [v for v in values if (v < minimum if inclusive else v <= minimum)]
        if bad:
            relation = "at least" if inclusive else "above"
            raise ValueError(
                f"{what} must be {relation} {minimum:g}" + (f", reaching {bad[0]:g}" if bad[0] != value else "")
            )
        return value

    return AfterValidator(check)


positive = _bounded(0.0, inclusive=False, what="a temperature")  # Annotated[..., positive]
non_negative = _bounded(0.0, inclusive=True, what="a weight (0 switches the term off)")
