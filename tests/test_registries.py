"""A toy strategy and a toy model kind, added from this file through the registries alone, run from a recipe."""

from __future__ import annotations

from typing import Literal

import pytest
from torch import nn

from distill.core.distiller import SupervisedObjective
from distill.models import ModelContext, ModelSpec, register_model, unregister_model
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.strategies import Row, RunContext, StrategySpec, register_strategy, unregister_strategy

TRAIN = {"epochs": 3, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}}


class TinyLinearSpec(ModelSpec):
    kind: Literal["tiny_linear"] = "tiny_linear"
    scale: int = 1

    def build(self, context: ModelContext) -> nn.Module:
        width = 1
        for size in context.input_shape:
            width *= size
        return nn.Sequential(nn.Flatten(), nn.Linear(width, context.num_classes * self.scale))


class LabelsTwice(StrategySpec):
    """Trains the student on labels, once per repeat: a strategy in a dozen lines."""

    kind: Literal["labels_twice"] = "labels_twice"
    repeats: int = 2

    def preflight(self, context: RunContext) -> None:
        context.build_student(0)

    def run(self, context: RunContext) -> list[Row]:
        rows = []
        for seed in context.recipe.seeds:
            for repeat in range(self.repeats):
                student, run_dir = context.build_student(seed + repeat), context.seed_dir(seed) / f"repeat-{repeat}"
                context.train(SupervisedObjective(student), run_dir, seed, f"repeat {repeat}")
                rows.append(context.row("repeat", seed, student, run_dir, index=repeat))
        return rows


@pytest.fixture
def registered():
    register_model("tiny_linear")(TinyLinearSpec)
    register_strategy("labels_twice")(LabelsTwice)
    yield
    unregister_model("tiny_linear")
    unregister_strategy("labels_twice")


def test_a_toy_strategy_and_model_kind_run_from_a_recipe(registered, tmp_path):
    raw = {
        "strategy": {"kind": "labels_twice", "repeats": 2},
        "student": {"model": {"kind": "tiny_linear"}, "train": TRAIN},
    }
    results = run_recipe(validate_recipe(raw), raw, tmp_path, show_progress=False)
    assert [row["label"] for row in results["rows"]] == ["repeat 0", "repeat 1"]
    assert find_row(results, "repeat", 1)["parameters"] == 64 * 10 + 10
    assert find_row(results, "repeat", 0)["score"]["mean"] > 0.5  # a linear model learns digits in three epochs
    assert "teacher" not in results


def test_a_field_of_another_strategy_is_an_unknown_key_with_the_allowed_ones(registered):
    with pytest.raises(RecipeError, match=r"strategy\.peers: unknown key; allowed keys here: kind, repeats"):
        validate_recipe({"strategy": {"kind": "labels_twice", "peers": 3}})
    with pytest.raises(RecipeError, match=r"student\.model\.hidden: unknown key.*allowed keys here: kind, scale"):
        validate_recipe({"student": {"model": {"kind": "tiny_linear", "hidden": [3]}}})


def test_unknown_kinds_list_the_registered_ones():
    with pytest.raises(RecipeError, match=r"strategy: unknown strategy kind 'mutal'.*did you mean 'mutual'"):
        validate_recipe({"strategy": {"kind": "mutal"}})
    with pytest.raises(RecipeError, match=r"teacher\.model: unknown model kind 'mpl'.*did you mean 'mlp'"):
        validate_recipe({"teacher": {"model": {"kind": "mpl"}}})


def test_a_python_factory_is_a_model_kind(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n\n"
        "def wide(num_classes, width=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))\n"
    )
    monkeypatch.chdir(tmp_path)
    raw = {"student": {"model": {"kind": "python", "factory": "my_models:wide", "options": {"width": 5}}}}
    recipe = validate_recipe(raw)
    model = recipe.student.model.build(ModelContext(10, input_shape=(64,)))
    assert model[1].out_features == 5 and model[3].out_features == 10
    with pytest.raises(RecipeError, match="has no function 'narrow'; it has \\['wide'\\]"):
        validate_recipe({"student": {"model": {"kind": "python", "factory": "my_models:narrow"}}})
