"""Recipes: the built-ins validate, bad recipes give key paths, allowed values and close matches."""

from __future__ import annotations

import pytest

from distill.core.schedules import Schedule
from distill.run.recipe import (
    Recipe,
    RecipeError,
    apply_override,
    builtin_recipes,
    load_recipe,
    resolve_recipe_path,
    validate_recipe,
)


@pytest.mark.parametrize("name", ["digits-demo", "hinton-mnist"])
def test_builtin_recipes_validate(name):
    recipe, raw = load_recipe(name)
    assert isinstance(recipe, Recipe) and raw["name"] == name


def test_hinton_recipe_matches_the_paper_architecture():
    recipe, _ = load_recipe("hinton-mnist")
    assert recipe.teacher.model.hidden == [1200, 1200] and recipe.teacher.model.dropout > 0
    assert recipe.student.model.hidden == [800, 800]
    assert recipe.distill.temperature == 20.0 and recipe.data.dataset == "mnist"


def test_unknown_key_names_the_path_the_allowed_keys_and_the_closest():
    with pytest.raises(RecipeError) as error:
        validate_recipe({"teacher": {"trian": {"epochs": 3}}})
    message = str(error.value)
    assert "teacher.trian: unknown key (did you mean 'train'?)" in message
    assert "allowed keys here: cache, checkpoint, ensemble, model, seed, train" in message


def test_unknown_loss_in_a_match_gives_the_list_index_and_the_known_losses():
    raw = {
        "distill": {
            "matches": [
                {"student": "fc1", "teacher": "fc1"},
                {"student": "fc1", "teacher": "fc2", "loss": "hiden_mse"},
            ]
        }
    }
    with pytest.raises(RecipeError) as error:
        validate_recipe(raw)
    message = str(error.value)
    assert "distill.matches[1].loss" in message
    assert "did you mean 'hidden_mse'" in message and "kd" in message and "'hiden_mse'" in message


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(RecipeError) as error:
        validate_recipe({"student": {"train": {"optimizer": {"name": "adamm"}}}})
    message = str(error.value)
    assert "student.train.optimizer.name" in message
    assert "'sgd', 'adam' or 'adamw'" in message and "'adamm'" in message


def test_out_of_range_number_and_bad_connector():
    with pytest.raises(RecipeError, match=r"teacher\.train\.epochs: .*greater than or equal to 1"):
        validate_recipe({"teacher": {"train": {"epochs": 0}}})
    with pytest.raises(RecipeError, match=r"distill\.matches\[0\]\.connector: .*did you mean 'linear'"):
        validate_recipe({"distill": {"matches": [{"student": "a", "teacher": "b", "connector": "liner"}]}})


def test_schedules_in_recipes():
    recipe = validate_recipe({"distill": {"temperature": {"kind": "linear", "start": 8, "end": 2}, "hard_weight": 0.5}})
    assert isinstance(recipe.distill.temperature, Schedule)
    assert recipe.distill.temperature(5, 10) == pytest.approx(5.0)
    with pytest.raises(RecipeError, match=r"distill\.temperature"):
        validate_recipe({"distill": {"temperature": {"kind": "linear", "start": 8}}})


def test_overrides_set_nested_keys_list_items_and_parse_yaml_values():
    raw = {"distill": {"matches": [{"student": "fc1", "teacher": "fc1"}]}}
    apply_override(raw, "student.train.epochs=3")
    apply_override(raw, "distill.matches.0.weight=0.5")
    apply_override(raw, "seeds=[1, 2]")
    recipe = validate_recipe(raw)
    assert recipe.student.train.epochs == 3 and recipe.distill.matches[0].weight == 0.5 and recipe.seeds == [1, 2]
    with pytest.raises(RecipeError, match=r"key\.path=value"):
        apply_override(raw, "student.train.epochs")
    with pytest.raises(RecipeError, match="index below 1"):
        apply_override(raw, "distill.matches.3.weight=1")
    with pytest.raises(RecipeError, match="is a value, not a section"):
        apply_override(raw, "student.train.epochs.x=1")


def test_override_errors_are_validated_like_the_file():
    with pytest.raises(RecipeError, match=r"student\.train\.batch_size"):
        load_recipe("digits-demo", ["student.train.batch_size=zero"])


def test_bad_files_and_unknown_recipe_names(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("teacher: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(broken)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(scalar)
    with pytest.raises(RecipeError, match=r"built-in recipes: .*digits-demo"):
        resolve_recipe_path("no-such-recipe")
    assert "hinton-mnist" in builtin_recipes()


def test_method_options_layer_lists_and_stages_validate():
    raw = {
        "distill": {
            "response_loss": "dkd",
            "response_options": {"alpha": 1, "beta": 8},
            "matches": [
                {"student": ["block1", "block2"], "teacher": ["block1", "block2"], "loss": "at", "weight": [1, 2]},
                {"student": "flatten", "teacher": "flatten", "loss": "crd", "options": {"nce_k": 64}},
                {"student": "b", "teacher": "b", "loss": "ab", "stage": "both", "pretrain_epochs": 2},
            ],
        }
    }
    recipe = validate_recipe(raw)
    assert recipe.distill.matches[0].weight == [1, 2] and recipe.distill.matches[1].options == {"nce_k": 64}
    assert recipe.distill.matches[2].stage == "both"


def test_unknown_method_option_names_the_match_and_the_accepted_options():
    raw = {"distill": {"matches": [{"student": "a", "teacher": "a", "loss": "at", "options": {"q": 2}}]}}
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw)
    message = str(info.value)
    assert "distill.matches[0]" in message and "unknown option(s) ['q'] for loss 'at'; it accepts: p" in message
    with pytest.raises(RecipeError, match="response_options: unknown option"):
        validate_recipe({"distill": {"response_loss": "kd", "response_options": {"alpha": 1}}})
    with pytest.raises(RecipeError, match=r"distill\.matches\[0\]\.stage"):
        validate_recipe({"distill": {"matches": [{"student": "a", "teacher": "a", "stage": "later"}]}})
