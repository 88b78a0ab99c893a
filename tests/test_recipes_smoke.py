"""One seed of every shipped recipe, end to end with one epoch and a small training set.

The recipe's own dataset, models, strategy and distillation settings are kept; only seeds, epochs and
data size are cut (text recipes read a few lines copied from ../shared/data). A new file in
``recipes/`` is picked up by the glob and must pass here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from distill.run.recipe import load_recipe
from distill.run.runner import run_recipe
from tests.conftest import PROJECT_ROOT, SHARED_DATA

RECIPES = sorted((PROJECT_ROOT / "distill" / "recipes").glob("*.yaml"))
SHORT = ["seeds=[0]", "teacher.train.epochs=1", "student.train.epochs=1"]
EXTRA = {  # settings that multiply training runs, cut for the smoke test
    "ensemble-mnist1d": ["teacher.ensemble.members=2"],
    "born-again-mnist1d": ["strategy.generations=1"],
    # the real SmolLM2 teacher (offline, from its PyPI package) on a few KJV blocks
    "smollm2-kjv": ["data.train_subset=8", "data.eval_subset=2", "generation.samples=1", "generation.max_new_tokens=4"],
}
TEXT_LINES = {  # lines kept of each split file
    "sst2": {"train.tsv": 41, "dev.tsv": 25},
    "conll2003": {"train.txt": 300, "dev.txt": 150, "test.txt": 150},
}


def _tiny_copy(dataset: str, folder: Path) -> Path:
    """The first lines of each split file (header included), cut at a blank line for CoNLL sentences."""
    source = SHARED_DATA / dataset
    folder.mkdir()
    for name, count in TEXT_LINES[dataset].items():
        lines = (source / name).read_text().splitlines(keepends=True)[:count]
        text = "".join(lines)
        (folder / name).write_text(text.rstrip("\n") + "\n\n" if name.endswith(".txt") else text)
    if (source / "labels.txt").exists():  # CoNLL's tag list
        (folder / "labels.txt").write_text((source / "labels.txt").read_text())
    return folder


def _tiny_files(raw_data: dict, folder: Path, lines: int = 400) -> list[str]:
    """A recipe that reads its own files (``data.train`` ...): the first ``lines`` of each, cut at a
    sentence break, and the overrides that point the recipe at them."""
    folder.mkdir()
    overrides = []
    for role in ("train", "validation", "test", "unlabeled"):
        if raw_data.get(role):
            source = Path(raw_data[role])
            text = "".join(source.read_text().splitlines(keepends=True)[:lines])
            (folder / source.name).write_text(text.rsplit("\n\n", 1)[0] + "\n\n")
            overrides.append(f"data.{role}={folder / source.name}")
    return overrides


def _overrides(name: str, dataset: str, tmp_path: Path, raw_data: dict) -> list[str]:
    if dataset == "files":
        return [*SHORT, *_tiny_files(raw_data, tmp_path / "files")]
    if dataset in TEXT_LINES:
        return [*SHORT, f"data.data_dir={_tiny_copy(dataset, tmp_path / dataset)}", "data.train_subset=null"]
    return [*SHORT, "data.train_subset=300", *EXTRA.get(name, [])]


@pytest.mark.parametrize("path", RECIPES, ids=[path.stem for path in RECIPES])
def test_every_recipe_runs_one_short_seed_end_to_end(path: Path, tmp_path: Path) -> None:
    shipped, shipped_raw = load_recipe(path)
    overrides = _overrides(path.stem, shipped.data.dataset, tmp_path, shipped_raw["data"])
    recipe, raw = load_recipe(path, overrides)
    results = run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    assert results["rows"], f"{path.stem} produced no result rows"
    for row in results["rows"]:
        score = row["score"]["mean"]
        assert math.isfinite(score) and 0.0 <= score <= 1.0, f"{path.stem} row {row['label']}: score {score}"
        assert row["parameters"] > 0 and row["size_bytes"] > 0
    assert (tmp_path / "run" / "results.json").exists()
