"""``train.fsdp`` under ``torchrun --nproc-per-node 2`` on CPU (FSDP2 over gloo): the trained modules are really
sharded, the checkpoints hold whole weights equal to a 1-process run at the same global batch, and a run
killed mid-epoch resumes under FSDP (its optimizer state cut back into shards) to the same weights."""

from __future__ import annotations

import copy
import json

import pytest

from tests.test_multiprocess import CONNECTOR, KD, _distill, _largest_differences, _write

FSDP = {"min_params": 50}  # the tiny MLPs' layers are units of their own, not just the whole model


def _with_fsdp(recipe: dict, parts: tuple[str, ...] = ("student",)) -> dict:
    recipe = copy.deepcopy(recipe)
    for part in parts:
        recipe[part]["train"]["fsdp"] = dict(FSDP)
    return recipe


def _fsdp_records(run: str) -> list[dict]:
    lines = (run / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == "fsdp"]


@pytest.mark.parametrize("matches", [[], [CONNECTOR]], ids=["kd", "feature_connector"])
def test_fsdp_over_two_processes_trains_the_weights_of_one_process(tmp_path, matches):
    recipe = _with_fsdp({**KD, "distill": {**KD["distill"], "matches": matches}})
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 50), processes=1)  # one process: nothing to shard, plain training
    _distill(two, _write(tmp_path, recipe, 25), processes=2)
    (record,) = _fsdp_records(two)
    assert record["processes"] == 2 and {"", "student.fc1", "student.head"} <= set(record["units"]), record
    assert record["parameter_bytes_this_process"] * 2 == record["parameter_bytes"], record  # even shards here
    assert not _fsdp_records(one)
    differences = _largest_differences(one, two)
    assert len(differences) >= 2 and max(differences.values()) < 1e-5, differences


def test_an_fsdp_run_killed_mid_epoch_resumes_to_the_same_weights(tmp_path):
    recipe = _with_fsdp(KD, ("teacher", "student"))
    for part in ("teacher", "student"):
        recipe[part]["train"]["checkpoint_every_steps"] = 2
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 50), processes=1)
    halves = _write(tmp_path, recipe, 25)
    # SIGKILL after the student's 6th optimizer step (8 teacher steps come first), before its step-6 checkpoint
    assert _distill(two, halves, 2, kill_at="step#14") != 0
    _distill(two, halves, 2, "--resume")  # the student continues from its step-4 checkpoint, sharded again
    differences = _largest_differences(one, two)
    assert len(differences) == 2 and max(differences.values()) < 1e-5, differences


def test_unknown_wrap_classes_are_refused_with_the_model_classes(tmp_path):
    from torch import nn

    from distill.train.fsdp import fsdp_plugin
    from distill.train.settings import FsdpSettings

    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"wrap names \['Block'\].*classes are \['Linear', 'ReLU', 'Sequential'\]"):
        fsdp_plugin(FsdpSettings(wrap=["Block"]), model)


def test_objectives_that_edit_weights_between_steps_are_refused_under_fsdp():
    from types import SimpleNamespace

    from accelerate.utils import DistributedType
    from torch import nn

    from distill.train.fsdp import host_copy

    sharded = SimpleNamespace(distributed_type=DistributedType.FSDP)
    pruning = SimpleNamespace(after_step=lambda step, total: None)
    with pytest.raises(ValueError, match=r"student: train.fsdp cannot shard this objective: .*\(after_step\)"):
        host_copy(pruning, sharded, nn.Linear(2, 2), "student")
    assert host_copy(SimpleNamespace(), sharded, nn.Linear(2, 2), "student") is not None
    assert host_copy(pruning, SimpleNamespace(distributed_type=DistributedType.MULTI_CPU), nn.Linear(2, 2), "x") is None


def test_a_causal_lm_is_sharded_by_its_decoder_layers_and_trains_the_weights_of_one_process(tmp_path):
    from tests.test_lm_run import lm_recipe

    recipe = lm_recipe(tmp_path)
    del recipe["teacher"]["train"]  # a pretrained teacher, used as it is: only the student is sharded
    recipe["data"]["train_subset"] = 160  # whole global batches of 16: no batch padded across processes
    recipe["student"] |= {"baseline": False}
    recipe["student"]["train"] |= {"epochs": 1, "cpu": True, "fsdp": {}}  # the default units: decoder layers
    recipe["generation"] = {"samples": 0}
    one, two = tmp_path / "one", tmp_path / "two"
    _distill(one, _write(tmp_path, recipe, 16), processes=1)
    _distill(two, _write(tmp_path, recipe, 8), processes=2)
    (record,) = _fsdp_records(two)
    assert [unit for unit in record["units"] if "layers." in unit], record
    differences = _largest_differences(one, two)
    assert differences and max(differences.values()) < 1e-5, differences


def test_the_documented_accelerate_config_asks_for_fsdp2_by_decoder_layers():
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType
    from transformers.models.llama import modeling_llama

    from tests.test_multiprocess import ROOT

    config = ClusterConfig.from_yaml_file(str(ROOT / "docs" / "accelerate" / "fsdp2.yaml"))
    assert config.distributed_type == DistributedType.FSDP and config.fsdp_config["fsdp_version"] == 2
    assert hasattr(modeling_llama, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])
