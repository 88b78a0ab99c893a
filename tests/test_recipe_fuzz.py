"""Property-based fuzz of the recipe validator (hypothesis): mutants of every shipped recipe either validate or
are refused with a RecipeError naming the key path, never a traceback, and nonsense is never accepted."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.run.recipe import RecipeError, validate_recipe

RECIPES = {path.stem: yaml.safe_load(path.read_text()) for path in sorted(Path("distill/recipes").glob("*.yaml"))}
# numbers where a negative value means something: seeds, and indices into layers counted from either end
NEGATIVE_ALLOWED = ("seed", "seeds", "split_seed", "layer_map", "layers_from")
NONSENSE_NUMBERS = [math.nan, math.inf, -math.inf, True, False]


def _leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) of the recipe tree, sections and lists included."""
    found = [(path, node)] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _leaves(value, (*path, index))
    return found


def _replaced(raw: dict, path: tuple, value: Any) -> dict:
    mutant = copy.deepcopy(raw)
    node = mutant
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return mutant


def _where(path: tuple) -> str:
    return ".".join(str(part) for part in path if not isinstance(part, int))


@st.composite
def mutants(draw) -> tuple[dict, tuple, Any, str]:
    """A shipped recipe with one value changed: (mutant, path, new value, the kind of change)."""
    raw = RECIPES[draw(st.sampled_from(sorted(RECIPES)))]
    path, old = draw(st.sampled_from(_leaves(raw)))
    if isinstance(old, bool):
        new, kind = draw(st.sampled_from([(2, "any"), ("maybe", "any"), (None, "any")]))
    elif isinstance(old, (int, float)):
        choices = [(value, "nonsense") for value in NONSENSE_NUMBERS]
        choices += [(-abs(old) - 1, "negative"), (0, "any"), (10**12, "any"), ("abc", "nonsense"), ([old], "any")]
        new, kind = draw(st.sampled_from(choices))
    elif isinstance(old, str):
        new, kind = draw(st.sampled_from([("", "empty"), (" ", "empty"), (3, "any"), (None, "any"), ({}, "any")]))
    elif isinstance(old, dict):
        new, kind = draw(st.sampled_from([({**old, "bogus_key": 1}, "unknown key"), ("text", "any"), ([], "any")]))
    else:  # a list
        new, kind = draw(st.sampled_from([([], "any"), ([*old, *old], "any"), ("text", "any"), ({"a": 1}, "any")]))
    return _replaced(raw, path, new), path, new, kind


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutants())
def test_mutated_recipes_are_refused_with_a_key_path_or_make_sense(mutant):
    recipe, path, new, kind = mutant
    try:
        validate_recipe(recipe)
    except RecipeError as refused:
        message = str(refused)
        assert "problem(s)" in message and "Traceback" not in message
        return
    where = _where(path)
    if kind == "nonsense":
        pytest.fail(f"{where}: {new!r} accepted")
    if kind == "negative" and not any(part in NEGATIVE_ALLOWED for part in path):
        pytest.fail(f"{where}: negative {new!r} accepted")
    if kind == "empty":
        pytest.fail(f"{where}: empty text {new!r} accepted")
    if kind == "unknown key":
        pytest.fail(f"{where}: an unknown key accepted")


def test_every_shipped_recipe_validates_unchanged():
    for name, raw in RECIPES.items():
        validate_recipe(raw, name)
