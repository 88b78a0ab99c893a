"""Reading recipe YAML strictly: ``yaml.safe_load`` semantics, except that a key given twice in one mapping is
an error naming the file, both lines and the key (PyYAML silently keeps the last one), and a YAML error names
the file, line and column."""

from __future__ import annotations

from typing import Any

import yaml


class YAMLProblem(ValueError):
    """Recipe text that does not parse, or a mapping with a duplicate key; the message says where."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)  # resolves YAML merge keys (<<) first, as SafeLoader does
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise YAMLProblem(
                f"key {key!r} appears twice in one mapping (lines {seen[key]} and {line}); YAML would keep only the "
                "last one, so delete or rename one of them"
            )
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def load_recipe_yaml(text: str, source: str) -> Any:
    """The YAML document in ``text`` (``source`` names it in errors: a path, or "override a.b=...")."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except YAMLProblem as problem:
        raise YAMLProblem(f"{source}: {problem}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        what = getattr(error, "problem", None) or str(error)
        raise YAMLProblem(f"{source} is not valid YAML:{where} {what}") from None
