"""Stopping and resuming: step checkpoints resume exactly mid-epoch, SIGTERM/SIGINT finish the step and write a
checkpoint, a run lock refuses a second writer, evaluation never changes training, and a partial metrics line
is ignored."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import Subset, TensorDataset
from typer.testing import CliRunner

from distill.cli import app
from distill.core.objective import SupervisedObjective
from distill.train import Trainer, TrainSettings
from distill.train.lock import LOCK_FILE, RunLock, RunLockedError
from distill.train.metrics_log import read_records, truncate_after
from distill.train.signals import TrainingInterrupted
from tests.test_cli import TINY_RECIPE

DATA = TensorDataset(torch.randn(60, 6, generator=torch.Generator().manual_seed(1)), torch.arange(60) % 3)
EVAL = (
    "validation",
    TensorDataset(torch.randn(20, 6, generator=torch.Generator().manual_seed(2)), torch.arange(20) % 3),
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))


class Hooked:
    """A supervised objective that calls ``action(step)`` after every optimizer step."""

    def __init__(self, action=None):
        self.objective = SupervisedObjective(_model())
        self.trainable, self.action = self.objective.trainable, action

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def after_step(self, step, total_steps):
        if self.action is not None:
            self.action(step)


def _train(folder, resume=False, objective=None, eval_data=EVAL, **options):
    settings = TrainSettings(**{"epochs": 3, "batch_size": 8, "keep_checkpoints": 3, **options})
    objective = objective or Hooked()
    Trainer(objective, DATA, eval_data, settings, folder, seed=5, show_progress=False).fit(resume=resume)
    return objective.trainable.state_dict()


def _same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("reference"))  # 8 steps per epoch, no step checkpoints


def _crash_at(wanted):
    def action(step):
        if step == wanted:
            raise RuntimeError(f"crash after step {wanted}")

    return action


def test_step_checkpoints_resume_exactly_mid_epoch(tmp_path, reference):
    with pytest.raises(RuntimeError, match="crash after step 13"):
        _train(tmp_path, objective=Hooked(_crash_at(13)), checkpoint_every_steps=3)
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").glob("epoch-*"))
    assert checkpoints[-1] == "epoch-0001-step-00000012"  # 4 of epoch 2's 8 batches done
    state = json.loads((tmp_path / "checkpoints" / checkpoints[-1] / "state.json").read_text())
    assert state["step_in_epoch"] == 4
    assert _same(_train(tmp_path, resume=True, checkpoint_every_steps=3), reference)
    epochs = [r["epoch"] for r in read_records(tmp_path / "metrics.jsonl") if r["event"] == "epoch"]
    assert epochs == [0, 1, 2]  # nothing logged twice


def _signal_at(wanted, number):
    def action(step):
        if step == wanted:
            os.kill(os.getpid(), number)

    return action


@pytest.mark.parametrize(("number", "at"), [(signal.SIGTERM, 11), (signal.SIGINT, 16)])
def test_a_signal_finishes_the_step_writes_a_checkpoint_and_resumes_exactly(tmp_path, reference, number, at):
    with pytest.raises(TrainingInterrupted) as stopped:
        _train(tmp_path, objective=Hooked(_signal_at(at, number)))
    said = str(stopped.value)
    assert stopped.value.signal_number == number and signal.Signals(number).name in said and "--resume" in said
    # step 11 is inside epoch 2 (a step checkpoint); step 16 ends it (the epoch checkpoint, evaluated)
    expected = "epoch-0001-step-00000011" if at == 11 else "epoch-0001"
    assert f"after optimizer step {at}" in said and expected in said
    assert (tmp_path / "checkpoints" / expected / "state.json").is_file()
    assert signal.getsignal(number) is not None  # our handler is gone again
    assert _same(_train(tmp_path, resume=True), reference)


def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path):
    with RunLock(tmp_path):
        lock = json.loads((tmp_path / LOCK_FILE).read_text())
        assert lock["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=rf"in use by process {os.getpid()}, which is still running"):
            RunLock(tmp_path).__enter__()
    assert not (tmp_path / LOCK_FILE).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": lock["host"]}))
    with RunLock(tmp_path) as taken:  # killed owner: the run can be resumed
        assert taken.held and json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_cli_refuses_a_second_writer_beside_a_live_run(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(TINY_RECIPE))
    out = tmp_path / "run"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_FILE).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname()}))
        result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--quiet", "--resume"])
    finally:
        owner.kill()
        owner.wait()
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and f"in use by process {owner.pid}" in said, said
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing was written


def test_evaluation_never_changes_training(tmp_path, reference):
    # dropout draws from the global generator: evaluating (all, a subset, or nothing) must not shift it
    assert _same(_train(tmp_path / "none", eval_data=None), reference)
    subset = ("validation", Subset(EVAL[1], range(7)))
    assert _same(_train(tmp_path / "subset", eval_data=subset), reference)


def test_a_partial_last_metrics_line_is_ignored_and_rewritten_away(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"event": "step", "step": 1}\n{"event": "step", "step": 2}\n{"event": "ep')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: line\(s\) 3 are not whole JSON records"):
        assert [r["step"] for r in read_records(path)] == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        truncate_after(path, 1)
    assert path.read_text() == '{"event": "step", "step": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left behind
