"""Damaged checkpoints: every file is verified against the sha256 recorded in state.json; a damaged newest
checkpoint is skipped (said, with the file named) for the newest older one that verifies, and the resumed
run still ends bit-identical to an uninterrupted one. Also the NaN guard on checkpoints and --resume-from."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from distill.core.objective import SupervisedObjective
from distill.train import NonFiniteLossError, Trainer, TrainSettings
from distill.train.checkpoint import write_checkpoint
from distill.train.resume import CheckpointError, find_resumable

DATA = TensorDataset(torch.randn(48, 6, generator=torch.Generator().manual_seed(0)), torch.arange(48) % 3)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _train(folder, resume=False, epochs=3, objective=None, **options):
    settings = TrainSettings(epochs=epochs, batch_size=8, keep_checkpoints=3, keep_when_done="all", **options)
    objective = objective or SupervisedObjective(_model())
    Trainer(objective, DATA, None, settings, folder, seed=3, show_progress=False).fit(resume=resume)
    return objective.trainable.state_dict()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    return folder, _train(folder)


def _same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_64_bytes(path):
    data = bytearray(path.read_bytes())
    for offset in range(len(data) - 200, len(data) - 136):  # inside the tensor data, not the header
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _drop_key(path, key):
    state = json.loads(path.read_text())
    del state[key]
    path.write_text(json.dumps(state))


DAMAGE = {
    "truncated model": (lambda c: _truncate(c / "epoch-0002" / "model.safetensors"), "model.safetensors"),
    "64 flipped bytes in model": (lambda c: _flip_64_bytes(c / "epoch-0002" / "model.safetensors"), "sha256"),
    "truncated optimizer": (lambda c: _truncate(c / "epoch-0002" / "optimizer.safetensors"), "optimizer"),
    "garbled rng": (lambda c: _flip_64_bytes(c / "epoch-0002" / "rng.safetensors"), "rng.safetensors"),
    "truncated state.json": (lambda c: _truncate(c / "epoch-0002" / "state.json"), "not valid JSON"),
    "state.json without step": (lambda c: _drop_key(c / "epoch-0002" / "state.json", "step"), "lacks 'step'"),
    "deleted checkpoint folder": (lambda c: shutil.rmtree(c / "epoch-0002"), "points at epoch-0002"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_and_resumes_exactly(tmp_path, reference, capsys, case):
    source, expected = reference
    shutil.copytree(source, tmp_path / "run")
    damage, named = DAMAGE[case]
    damage(tmp_path / "run" / "checkpoints")
    resumed = _train(tmp_path / "run", resume=True)
    assert _same(resumed, expected)  # epoch 2 re-trained from epoch-0001, bit-identical
    said = " ".join(capsys.readouterr().err.split())
    assert named in said and "resuming from" in said and "epoch-0001" in said


@pytest.mark.parametrize("pointer", ["missing", "garbled"])
def test_latest_json_damage_never_restarts_the_stage(tmp_path, reference, capsys, pointer):
    source, expected = reference
    shutil.copytree(source, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "latest.json"
    latest.unlink() if pointer == "missing" else latest.write_text('{"checkpoint": "epo')
    found = find_resumable(tmp_path / "run" / "checkpoints")
    assert found.folder.name == "epoch-0002" and "latest.json" in found.skipped[0]
    assert _same(_train(tmp_path / "run", resume=True), expected)
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics if '"epoch"' in line][-1] == 2


def test_no_good_checkpoint_is_one_sentence_naming_each_file(tmp_path):
    _train(tmp_path, epochs=1)
    _flip_64_bytes(tmp_path / "checkpoints" / "epoch-0000" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"no checkpoint .*epoch-0000/model.safetensors is damaged"):
        _train(tmp_path, resume=True, epochs=1)


def test_resume_from_picks_a_checkpoint_and_names_the_ones_there_are(tmp_path, reference):
    source, expected = reference
    shutil.copytree(source, tmp_path / "run")
    assert _same(_train(tmp_path / "run", resume="epoch-0000"), expected)  # epochs 1 and 2 re-trained
    missing = r"--resume-from epoch-0009: .*no such checkpoint \(it has: epoch-0000, epoch-0001\)"
    with pytest.raises(CheckpointError, match=missing):
        shutil.rmtree(tmp_path / "run" / "checkpoints" / "epoch-0002")
        _train(tmp_path / "run", resume="epoch-0009")


class PoisonAt:
    """Fill the first weight with inf after optimizer step ``step`` (an infinite learning rate)."""

    def __init__(self, step: int):
        self.objective = SupervisedObjective(_model())
        self.trainable, self.step = self.objective.trainable, step

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def after_step(self, step, total_steps):
        if step == self.step:
            with torch.no_grad():
                self.trainable[0].weight.fill_(float("inf"))


def test_non_finite_weights_never_reach_a_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"end of epoch 1 .*'0.weight' is not finite.*not written.*epoch-0000"):
        _train(tmp_path, objective=PoisonAt(step=12))  # 6 steps per epoch: the last step of epoch 1
    assert [p.name for p in (tmp_path / "checkpoints").glob("epoch-*")] == ["epoch-0000"]


def test_leftover_staging_folders_are_cleaned(tmp_path):
    model = _model()
    leftover = tmp_path / ".epoch-0001.abc123"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".latest.json.xyz.tmp").write_text("{")
    write_checkpoint(tmp_path, 0, {"model": model}, torch.optim.SGD(model.parameters(), lr=1).state_dict(), {"step": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0000", "latest.json"]
