"""The method catalogue, the registry and the recipes agree: every method is documented and usable."""

from __future__ import annotations

import yaml

from distill import losses
from distill.report.catalog import METHODS, markdown_table, method
from distill.run.recipe import validate_recipe

ISSUE_METHODS = {
    "kd",
    "dkd",
    "dist",
    "fitnet",
    "at",
    "sad",
    "nst",
    "ft",
    "ab",
    "vid",
    "rkd_distance",
    "rkd_angle",
    "sp",
    "cc",
    "pkt",
    "fsp",
    "crd",
    "srrl",
}


def test_every_method_is_catalogued_and_registered():
    names = {entry.name for entry in METHODS}
    assert names == ISSUE_METHODS
    assert names <= set(losses.names())
    assert method("crd").knowledge == "contrastive"


def test_every_recipe_line_validates():
    """The README's one-line recipes are real: each parses and validates as a `distill:` section."""
    for entry in METHODS:
        section = yaml.safe_load("{" + entry.recipe + "}")
        recipe = validate_recipe({"distill": section}, source=f"recipe line of {entry.name}")
        used = {recipe.distill.response_loss} | {m.loss for m in recipe.distill.matches}
        assert entry.name in used, entry.name


def test_markdown_table_has_a_row_per_method():
    table = markdown_table()
    assert len(table.splitlines()) == 2 + len(METHODS)
    assert "| `rkd_angle` | relation |" in table
