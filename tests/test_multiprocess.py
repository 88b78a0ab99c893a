"""Several processes: ``torchrun --nproc-per-node 2 -m distill run`` (gloo DDP on CPU) ends with the weights of
one process at the same global batch, and only the main process writes the run folder."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
KD = {
    "name": "small",
    "seeds": [0],
    "data": {"dataset": "digits", "train_subset": 200},
    "teacher": {"model": {"kind": "mlp", "hidden": [16]}, "train": {"epochs": 2, "cpu": True}},
    "student": {"model": {"kind": "mlp", "hidden": [8]}, "train": {"epochs": 2, "cpu": True}, "baseline": False},
    "distill": {"response_loss": "kd", "temperature": 4.0},
}
CONNECTOR = {"student": "relu1", "teacher": "relu1", "connector": "linear"}  # 8 wide to 16 wide
CRD = {"student": "relu1", "teacher": "relu1", "loss": "crd", "options": {"nce_k": 32}}
RECIPES = {
    "kd": KD,
    "feature_connector": {**KD, "distill": {**KD["distill"], "matches": [CONNECTOR]}},
    "crd": {**KD, "distill": {**KD["distill"], "matches": [CRD]}},  # its memory banks are compared too
    "dml": {key: value for key, value in KD.items() if key not in ("teacher", "distill")}
    | {"strategy": {"kind": "mutual", "peers": 2}},
}


def _write(folder: Path, recipe: dict, batch: int) -> Path:
    recipe = copy.deepcopy(recipe)
    for part in ("teacher", "student"):
        if "train" in recipe.get(part, {}):
            recipe[part]["train"]["batch_size"] = batch
    path = folder / f"recipe-{batch}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _distill(out: Path, recipe: Path, processes: int, *options: str, kill_at: str = "") -> int:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = [*launcher, "-m", "distill", "run", str(recipe), "--out", str(out), "--quiet", *options]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    environment["DISTILL_KILL_AT"] = kill_at
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 or kill_at, done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode


def _largest_differences(one: Path, other: Path) -> dict[str, float]:
    """The largest difference in every weights file of the last checkpoints (models, connectors, method
    state such as CRD's memory banks)."""
    found = {}
    for path in sorted(one.rglob("checkpoints/epoch-*/*.safetensors")):
        relative = path.relative_to(one)
        first, second = load_file(path), load_file(other / relative)
        assert first.keys() == second.keys()
        # relative to 1 + |value|: CRD's normaliser Z is in the thousands, weights are below 1
        found[str(relative)] = max(
            float(((first[name] - second[name]).abs() / (1 + second[name].abs())).max()) for name in first
        )
    return found


@pytest.mark.parametrize("objective", list(RECIPES))
def test_two_processes_train_the_weights_of_one_at_the_same_global_batch(tmp_path, objective):
    recipe = RECIPES[objective]
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 50), processes=1)
    _distill(two, _write(tmp_path, recipe, 25), processes=2)  # 2 x 25 per step: the same global batch
    differences = _largest_differences(one, two)
    assert len(differences) >= 2 and max(differences.values()) < 1e-5, differences
    assert (two / "results.json").is_file() and "Training throughput" in (two / "report.md").read_text()
    assert not list(two.rglob("*.tmp")) and not (two / ".lock").exists()  # the others wrote nothing
    if objective == "kd":  # the comparison can tell a different schedule apart: one process at batch 25
        alone = tmp_path / "alone"
        _distill(alone, _write(tmp_path, recipe, 25), processes=1)
        assert min(_largest_differences(one, alone).values()) > 1e-4


def test_a_two_process_run_killed_mid_epoch_resumes_under_two_processes_to_the_same_weights(tmp_path):
    recipe = copy.deepcopy(KD)
    for part in ("teacher", "student"):
        recipe[part]["train"]["checkpoint_every_steps"] = 2
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 50), processes=1)
    halves = _write(tmp_path, recipe, 25)
    assert _distill(two, halves, 2, kill_at="step#6") != 0  # SIGKILL after the teacher's 6th step (of 8)
    assert not (two / "results.json").exists()
    _distill(two, halves, 2, "--resume")  # from the step-4 checkpoint, the lock of the dead run taken over
    differences = _largest_differences(one, two)
    assert len(differences) == 2 and max(differences.values()) < 1e-5, differences


def test_processes_that_would_each_train_alone_are_refused_with_the_setting_that_joins_them(monkeypatch):
    from distill.train.world import check_joined, is_main_process

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    with pytest.raises(ValueError, match=r"started 2 processes but Accelerate joined 1: .*set train.cpu: true"):
        check_joined(1)
    check_joined(2)


def test_two_processes_fill_the_teacher_output_cache_a_shard_each_and_both_read_all_of_it(tmp_path):
    """teacher.cache on text data: shards 0 and 2 come from the main process, 1 and 3 from the other, and
    they hold the trained teacher's outputs. (Text batches are length-grouped per process, and BERT's
    dropout draws differ per process, so this run is not one process's run at twice the batch.)"""
    from distill.core.cache import teacher_forward
    from distill.core.disk_cache import OutputCache
    from distill.run.recipe import validate_recipe
    from distill.run.runner import make_context
    from distill.train.checkpoint import load_module_weights
    from tests.hf_models import save_tiny_bert_folder

    bert = save_tiny_bert_folder(tmp_path / "bert")
    train = {"epochs": 1, "cpu": True, "optimizer": {"lr": 1e-3}}
    recipe = {
        "name": "cached-text",
        "data": {"dataset": "sst2", "train_subset": 40, "max_length": 24},
        "teacher": {"model": {"kind": "hf", "path": bert}, "train": dict(train), "cache": {"shard_examples": 12}},
        "student": {"model": {"kind": "hf", "path": bert, "layers": 1}, "train": dict(train), "baseline": False},
        "distill": {"matches": [{"student": "hidden:1", "teacher": "hidden:2", "loss": "hidden_mse"}]},
    }
    two = tmp_path / "two"
    _distill(two, _write(tmp_path, recipe, 10), processes=2)
    (folder,) = list((two / "teacher-cache").iterdir())
    assert sorted(path.name for path in folder.glob("shard-*")) == [f"shard-0000{i}.safetensors" for i in range(4)]
    cache = OutputCache(folder)  # finished: 12 + 12 + 12 + 4 examples recorded
    cache.verify()
    assert (two / "seed-0" / "distilled" / "checkpoints").is_dir()
    assert not list(two.rglob("*.tmp")) and not (two / ".lock").exists()
    context = make_context(validate_recipe(recipe), recipe, tmp_path / "probe", show_progress=False)
    teacher = context.build_teacher(context.recipe.teacher.model, 0)
    load_module_weights(teacher, two / "teacher" / "checkpoints" / "epoch-0000" / "model.safetensors")
    for index in (0, 13, 30, 39):  # one example of each shard
        inputs = context.task.collate([context.task.train[index]])
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", "index")}
        live = teacher_forward(teacher.eval(), ["hidden:2"], inputs)
        assert torch.allclose(cache.example("logits", index), live["logits"][0], atol=1e-5)
        assert torch.allclose(cache.example("hidden:2", index), live["hidden:2"][0], atol=1e-5)


def test_a_language_model_trains_from_the_teacher_cache_both_processes_filled(tmp_path):
    from tests.test_lm_run import lm_recipe

    recipe = lm_recipe(tmp_path)
    del recipe["teacher"]["train"]  # a pretrained teacher, used as it is, read from its top-k cache
    recipe["teacher"]["cache"] = {"top_k": 32, "shard_blocks": 64}
    recipe["data"]["train_subset"] = 160  # whole global batches of 16: no batch padded across processes
    recipe["student"] |= {"baseline": False}
    recipe["student"]["train"] |= {"epochs": 1, "cpu": True}
    recipe["generation"] = {"samples": 0}
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 16), processes=1)
    _distill(two, _write(tmp_path, recipe, 8), processes=2)
    differences = _largest_differences(one, two)
    assert differences and max(differences.values()) < 1e-5, differences
    manifest = json.loads((two / "teacher-cache" / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3 and not list(two.rglob("*.tmp"))  # 64 + 64 + 32 blocks, 2 processes
