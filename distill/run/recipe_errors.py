"""Recipe validation errors as a user reads them: one line per problem with its key path (``student.train.lr``),
an unknown key with the keys allowed there and the closest one, registry bases (model, strategy and
compress-step specs) resolved to the subclass the input's ``kind`` names."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError

from distill.compress.base import CompressStep, one_key_form, step_class
from distill.models import ModelSpec, spec_class
from distill.strategies import StrategySpec, strategy_class


def _is_union_tag(part: str) -> bool:
    """pydantic names union members in an error's location; users never wrote them."""
    return part in ("float", "int", "Schedule", "constrained-float") or "[" in part


def _key_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _is_union_tag(str(part)):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (through unions, lists and Annotated), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in getattr(annotation, "__args__", ()) + tuple(getattr(annotation, "__metadata__", ())):
        found = _model_in(argument)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    return _model_in(origin) if origin is not None and origin is not annotation else None


def _by_kind(model: type[BaseModel], node: Any) -> type[BaseModel]:
    """Registry bases (model and strategy specs) stand for the subclass the input's ``kind`` names."""
    kind = node.get("kind") if isinstance(node, dict) else None
    try:
        if model is ModelSpec:
            return spec_class(kind or "mlp")
        if model is StrategySpec:
            return strategy_class(kind or "offline")
        if model is CompressStep:
            kind = one_key_form(node).get("kind") if isinstance(node, (dict, str)) else None
            return step_class(kind or "prune")
    except ValueError:
        return model
    return model


def _allowed_keys(location: tuple[Any, ...], raw: Any, root: type[BaseModel]) -> list[str]:
    """The keys the model at ``location`` (the parent of an unknown key) accepts."""
    model: Any = root
    node = raw
    for part in location[:-1]:
        if isinstance(part, str) and _is_union_tag(part):
            continue
        if isinstance(node, (dict, list)):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = _model_in(field.annotation)
        if model is not None:
            model = _by_kind(model, node)
    return sorted(model.model_fields) if model is not None else []


# "not a list / not a section" errors of the other members of a union (``weight: 1.0 | list``, ``temperature:
# float | Schedule``): beside the member's own error at the same key they only add noise
_UNION_MISMATCH = {"list_type", "dict_type", "model_type", "model_attributes_type", "is_instance_of"}


def _problems(error: ValidationError) -> list[dict]:
    by_path: dict[str, list[dict]] = {}
    for item in error.errors():
        by_path.setdefault(_key_path(item["loc"]), []).append(item)
    kept = []
    for items in by_path.values():
        specific = [item for item in items if item["type"] not in _UNION_MISMATCH]
        kept.extend(specific or items)
    return kept


def format_validation_error(error: ValidationError, source: str, raw: Any, root: type[BaseModel]) -> str:
    """One line per problem of ``error`` (validating ``raw`` against ``root``), each with its key path; an
    unknown key lists the keys allowed there and the closest one."""
    problems = _problems(error)
    lines = [f"{source}: {len(problems)} problem(s)"]
    for item in problems:
        path = _key_path(item["loc"])
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"], raw, root)
            key = str(item["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {path}: unknown key{hint}; allowed keys here: {', '.join(allowed)}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        given = item["input"]  # a whole section (a cross-field rule) is not echoed back: the message says it
        lines.append(f"  {path}: {message}" + ("" if isinstance(given, dict) else f" (got {given!r})"))
    return "\n".join(lines)
