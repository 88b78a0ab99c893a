"""Checkpoints: atomic, safetensors + JSON only, loadable into the bare model, RNG restored."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import load_module_weights, write_checkpoint
from distill.train.resume import find_resumable, latest_checkpoint, read_checkpoint, restore_checkpoint_rng


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_atomic_json_never_leaves_a_half_file(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [path.name for path in tmp_path.iterdir()] == ["state.json"]


def test_checkpoint_roundtrip_weights_optimizer_and_rng(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    folder = write_checkpoint(tmp_path, 0, {"model": model}, optimizer.state_dict(), {"step": 1, "recipe": {"a": 1}})
    expected_draw = torch.rand(3)

    assert latest_checkpoint(tmp_path) == folder
    assert sorted(path.suffix for path in folder.iterdir()) == [
        ".json",
        ".safetensors",
        ".safetensors",
        ".safetensors",
    ]
    fresh = _model()
    fresh_optimizer = torch.optim.Adam(fresh.parameters(), lr=0.01)
    found = find_resumable(tmp_path)
    state, optimizer_state = found.state, read_checkpoint(found, {"model": fresh})
    fresh_optimizer.load_state_dict(optimizer_state)
    for saved, loaded in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(saved, loaded)
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(value, fresh_optimizer.state_dict()["state"][0][key])
    assert state["step"] == 1 and state["recipe"] == {"a": 1} and "torch" in state["versions"]
    restore_checkpoint_rng(found)
    assert torch.equal(torch.rand(3), expected_draw)


def test_old_checkpoints_are_pruned_and_latest_moves(tmp_path):
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(4):
        write_checkpoint(tmp_path, epoch, {"model": model}, optimizer.state_dict(), {"step": epoch}, keep_last=2)
    assert sorted(path.name for path in tmp_path.glob("epoch-*")) == ["epoch-0002", "epoch-0003"]
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 3
    assert not list(tmp_path.glob(".*"))  # no staging leftovers


def test_saved_model_loads_into_the_bare_model_and_mismatch_is_explained(tmp_path):
    model = _model()
    folder = write_checkpoint(
        tmp_path, 0, {"model": model}, torch.optim.SGD(model.parameters(), lr=1).state_dict(), {"step": 0}
    )
    bare = _model()
    load_module_weights(bare, folder)
    assert torch.equal(bare[0].weight, model[0].weight)
    with pytest.raises(ValueError, match="missing keys"):
        load_module_weights(nn.Sequential(nn.Linear(4, 3)), folder / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"expected a \.safetensors file"):
        load_module_weights(bare, tmp_path / "nothing.safetensors")


def test_a_finished_stage_keeps_its_final_weights_only(tmp_path):
    import pytest
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from distill.core.objective import SupervisedObjective
    from distill.train import Trainer, TrainSettings

    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))

    def trainer(folder, **options):
        torch.manual_seed(0)
        settings = TrainSettings(epochs=3, batch_size=8, **options)
        return Trainer(SupervisedObjective(nn.Linear(4, 2)), data, None, settings, folder, show_progress=False)

    final = trainer(tmp_path / "slim").fit()
    folders = sorted((tmp_path / "slim" / "checkpoints").glob("epoch-*"))
    assert [f.name for f in folders] == ["epoch-0002"]
    assert sorted(p.name for p in folders[0].iterdir()) == ["model.safetensors", "state.json"]
    assert trainer(tmp_path / "slim").fit(resume=True) == final  # finished: nothing re-trained
    with pytest.raises(ValueError, match=r"kept its weights only .* cannot resume to 5 epochs"):
        Trainer(
            SupervisedObjective(nn.Linear(4, 2)), data, None, TrainSettings(epochs=5, batch_size=8), tmp_path / "slim"
        ).fit(resume=True)
    trainer(tmp_path / "whole", keep_when_done="all", keep_optimizer_state="newest").fit()
    kept = sorted((tmp_path / "whole" / "checkpoints").glob("epoch-*"))
    assert len(kept) == 2 and (kept[-1] / "optimizer.safetensors").is_file()
    assert not (kept[0] / "optimizer.safetensors").exists()  # optimizer state in the newest checkpoint only
    assert json.loads((kept[0] / "state.json").read_text())["optimizer"] is None


def test_older_checkpoints_keep_weights_and_the_newest_the_optimizer(tmp_path):
    import pytest
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from distill.core.objective import SupervisedObjective
    from distill.train import Trainer, TrainSettings
    from distill.train.resume import CheckpointError, verify_checkpoint

    data = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))

    def folders(name, **options):
        torch.manual_seed(0)
        settings = TrainSettings(epochs=3, batch_size=8, keep_checkpoints=3, keep_when_done="all", **options)
        Trainer(SupervisedObjective(nn.Linear(4, 2)), data, None, settings, tmp_path / name, show_progress=False).fit()
        return sorted((tmp_path / name / "checkpoints").glob("epoch-*"))

    slim = folders("slim", keep_optimizer_state="newest")
    assert [(f / "optimizer.safetensors").is_file() for f in slim] == [False, False, True]
    assert all((f / "model.safetensors").is_file() for f in slim)
    with pytest.raises(CheckpointError, match=r"epoch-0000 kept its weights only .* cannot resume"):
        verify_checkpoint(slim[0])
    whole = folders("whole")  # the default: every kept checkpoint can be resumed from
    assert all((f / "optimizer.safetensors").is_file() for f in whole)
    sizes = [sum(p.stat().st_size for p in (tmp_path / n).rglob("*.safetensors")) for n in ("slim", "whole")]
    assert sizes[0] < sizes[1]
