"""The method catalogue, the registry and the recipes agree: every method is documented and usable."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from distill import losses
from distill.losses import registry
from distill.report.catalog import catalog, markdown_table, method
from distill.run.recipe import validate_recipe

ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture
def toy_method() -> Iterator[str]:
    """A method registered with catalog metadata for one test, then removed so other tests never see it."""

    @losses.register(
        "toy_zz",
        title="Toy Transfer",
        paper="Nobody et al. 2099",
        knowledge="response",
        inputs="logits",
        recipe="response_loss: toy_zz",
    )
    def toy_loss(student_logits, teacher_logits):
        return (student_logits - teacher_logits).pow(2).mean()

    try:
        yield "toy_zz"
    finally:
        losses.unregister("toy_zz")


def test_every_method_is_catalogued_and_registered():
    names = {entry.name for entry in catalog()}
    assert names == ISSUE_METHODS
    assert names <= set(losses.names())
    assert method("crd").knowledge == "contrastive"


def test_catalog_is_the_registry_metadata():
    for entry in catalog():
        info = losses.info(entry.name)
        assert (entry.title, entry.paper, entry.knowledge, entry.inputs, entry.recipe) == (
            info.title,
            info.paper,
            info.knowledge,
            info.inputs,
            info.recipe,
        )
    assert "hard_ce" not in {entry.name for entry in catalog()}  # helpers without a title stay out


def test_catalog_order_groups_by_knowledge_then_declared_order():
    entries = catalog()
    groups = [entry.knowledge for entry in entries]
    assert groups == sorted(groups, key=["response", "feature", "relation", "contrastive"].index)
    assert [e.name for e in entries[:3]] == ["kd", "dkd", "dist"]  # the classic before its refinements
    assert catalog() == entries  # stable


def test_every_recipe_line_validates():
    """The README's one-line recipes are real: each parses and validates as a `distill:` section."""
    for entry in catalog():
        section = yaml.safe_load("{" + entry.recipe + "}")
        recipe = validate_recipe({"distill": section}, source=f"recipe line of {entry.name}")
        used = {recipe.distill.response_loss} | {m.loss for m in recipe.distill.matches}
        assert entry.name in used, entry.name


def test_markdown_table_has_a_row_per_method():
    table = markdown_table()
    assert len(table.splitlines()) == 2 + len(catalog())
    assert "| `rkd_angle` | relation |" in table


def test_readme_contains_exactly_the_generated_table():
    """Regenerate with `python -m distill.report.catalog` after adding or changing a method's metadata."""
    readme = (ROOT / "README.md").read_text()
    start_marker, end_marker = "<!-- method-table:start -->\n", "\n<!-- method-table:end -->"
    start = readme.index(start_marker) + len(start_marker)
    assert readme[start : readme.index(end_marker)] == markdown_table()


def test_a_new_method_with_metadata_joins_the_catalog(toy_method):
    entries = catalog()
    assert toy_method in {entry.name for entry in entries}
    # no `order`: after the ordered methods of its group
    response = [entry.name for entry in entries if entry.knowledge == "response"]
    assert response == ["kd", "dkd", "dist", toy_method]
    assert f"| Toy Transfer (Nobody et al. 2099) | `{toy_method}` | response | logits |" in markdown_table()
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() not in readme  # the README test would now fail until it is regenerated


def test_the_toy_method_is_gone_after_its_test():
    assert "toy_zz" not in losses.names()
    assert "toy_zz" not in registry._INFO


def test_catalog_module_prints_the_table():
    """`python -m distill.report.catalog` is how the README table is regenerated."""
    command = [sys.executable, "-m", "distill.report.catalog"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout == markdown_table() + "\n"


def test_benchmark_settings_cover_exactly_the_catalog():
    """benchmarks/methods.py keeps only settings; every catalogued method has them, and nothing else does."""
    from benchmarks.methods import SETTINGS, benchmark_methods

    assert list(SETTINGS) == [entry.name for entry in catalog()]
    chosen = benchmark_methods("kd,crd")
    assert [m.name for m in chosen] == ["kd", "crd"]
    assert chosen[1].entry.title == "Contrastive Representation Distillation"
    assert chosen[1].settings.weight == 0.8
