"""Bad data and a bad environment: one sentence each, before any training (item 5 of issue 16)."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import distill.train.checkpoint as checkpoint_module
from distill.cli import app
from distill.data.idx import write_idx
from distill.train.resume import verify_checkpoint
from distill.train.storage import write_problem

SMALL = {
    "name": "small",
    "seeds": [0],
    "data": {"dataset": "digits", "train_subset": 200},
    "teacher": {"model": {"kind": "mlp", "hidden": [16]}, "train": {"epochs": 2, "batch_size": 50}},
    "student": {"model": {"kind": "mlp", "hidden": [8]}, "train": {"epochs": 2, "batch_size": 50}, "baseline": False},
}


def _cli(*arguments: str):
    result = CliRunner().invoke(app, [str(a) for a in arguments])
    return result.exit_code, " ".join(result.output.split())


def _recipe(tmp_path, recipe: dict = SMALL):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _mnist_folder(tmp_path, label=None, nan_at=None):
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    for split, count in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 255, size=(count, 8, 8)).astype(np.float32 if nan_at is not None else np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        if split == "t10k" and label is not None:
            labels[7] = label
        if split == "train" and nan_at is not None:
            images[nan_at, 2, 3] = np.nan
        write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    return folder


def _on_mnist(folder) -> dict:
    return {**SMALL, "data": {"dataset": "mnist", "data_dir": str(folder)}}


def test_a_label_outside_the_classes_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    code, said = _cli("run", _recipe(tmp_path, _on_mnist(_mnist_folder(tmp_path, label=10))), "--out", out, "--quiet")
    assert code == 2 and "test split: example 7 has label 10, outside the 10 classes 0..9" in said, said
    assert not (out / "teacher").exists()  # nothing trained


def test_non_finite_inputs_are_refused_before_training(tmp_path):
    out = tmp_path / "run"
    code, said = _cli("run", _recipe(tmp_path, _on_mnist(_mnist_folder(tmp_path, nan_at=5))), "--out", out, "--quiet")
    assert code == 2 and "train split: example 5 has a non-finite input value (nan)" in said, said
    assert not (out / "teacher").exists()


def test_an_empty_training_set_is_one_sentence(tmp_path):
    recipe, out = _recipe(tmp_path, {**SMALL, "data": {"dataset": "digits", "val_size": 1257}}), tmp_path / "run"
    code, said = _cli("run", recipe, "--out", out)
    assert code == 2 and "data.val_size is 1257 but dataset 'digits' has 1257 training examples" in said, said
    code, said = _cli("run", recipe, "--out", out, "data.val_size=100", "--quiet")  # fixed: the same --out starts
    assert code == 0, said


def test_an_override_that_is_not_yaml_names_itself(tmp_path):
    code, said = _cli("run", _recipe(tmp_path), "--out", tmp_path / "run", "teacher.train.epochs=[")
    assert code == 2 and "override teacher.train.epochs=[ is not valid YAML: line 1, column 2" in said, said
    assert "Traceback" not in said and not (tmp_path / "run").exists()


def test_a_key_given_twice_in_a_recipe_file_is_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: a\nseeds: [0]\nteacher:\n  seed: 1\n  seed: 2\n")
    code, said = _cli("run", path, "--out", tmp_path / "run")
    assert code == 2 and "key 'seed' appears twice in one mapping (lines 4 and 5)" in said, said


def test_write_problem_names_why_a_folder_cannot_be_written(tmp_path):
    assert write_problem(tmp_path / "fresh") is None and (tmp_path / "fresh").is_dir()
    (tmp_path / "file").write_text("not a folder")
    assert write_problem(tmp_path / "file" / "run") == "Not a directory"
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == []  # the probe is gone


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    code, said = _cli("run", _recipe(tmp_path), "--out", out, "--quiet")
    assert code == 0, said
    return out


def _read_only(monkeypatch):
    # the tests may run as root, for whom chmod does not make a folder read-only: the probe is replaced
    monkeypatch.setattr("distill.cli.write_problem", lambda folder: "Read-only file system")


def test_a_read_only_out_is_refused_before_training(tmp_path, monkeypatch):
    _read_only(monkeypatch)
    code, said = _cli("run", _recipe(tmp_path), "--out", tmp_path / "ro", "--quiet")
    assert code == 2 and f"the run folder {tmp_path / 'ro'} cannot be written (Read-only file system)" in said, said
    assert "choose another --out" in said


def test_resuming_a_finished_run_in_a_read_only_folder_writes_nothing(tmp_path, finished, monkeypatch):
    before = {path: path.stat().st_mtime_ns for path in finished.rglob("*")}
    _read_only(monkeypatch)
    code, said = _cli("run", _recipe(tmp_path), "--out", finished, "--resume")
    assert code == 0 and "finished; read-only, so shown as recorded" in said, said
    assert "distilled" in said  # the recorded table
    assert {path: path.stat().st_mtime_ns for path in finished.rglob("*")} == before


def test_a_full_disk_says_so_and_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    real_save, calls = checkpoint_module.save_file, []

    def save_until_full(tensors, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # optimizer + rng of epoch 1 written, then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", save_until_full)
    out = tmp_path / "run"
    code, said = _cli("run", _recipe(tmp_path), "--out", out, "--quiet", "teacher.train.epochs=3")
    assert code == 2 and "no space left on the device writing" in said and "is intact" in said, said
    assert "--resume" in said and "Traceback" not in said
    checkpoints = out / "teacher" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch-0000", "latest.json"]  # staging removed
    assert verify_checkpoint(checkpoints / "epoch-0000")["step"] == 4
    assert json.loads((checkpoints / "latest.json").read_text())["checkpoint"] == "epoch-0000"


@pytest.mark.parametrize(
    ("distill_section", "expected"),
    [
        ({"response_loss": "dkd", "response_options": {"temperature": -2}}, "temperature must be above 0"),
        ({"response_loss": "dkd", "response_options": {"beta": float("nan")}}, "expected a finite number"),
        ({"response_loss": "dkd", "response_options": {"alpha": True}}, "expected a number, got True"),
        ({"matches": [{"student": "net.0", "teacher": "net.0", "loss": "pkt", "options": {"eps": 0}}]}, "eps"),
        (
            {"matches": [{"student": "net.0", "teacher": "net.0", "loss": "srrl", "options": {"fm_weight": -1}}]},
            "at least",
        ),
    ],
)
def test_loss_options_that_make_no_sense_are_refused_with_their_key(distill_section, expected):
    from distill.run.recipe import RecipeError, validate_recipe

    with pytest.raises(RecipeError) as refused:
        validate_recipe({**SMALL, "distill": distill_section})
    assert expected in " ".join(str(refused.value).split())


def test_a_zero_loss_option_weight_is_allowed():
    from distill.run.recipe import validate_recipe

    validate_recipe({**SMALL, "distill": {"response_loss": "dkd", "response_options": {"alpha": 0}}})
