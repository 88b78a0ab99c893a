"""Several processes: ``torchrun --nproc-per-node 2 -m distill run`` (gloo DDP on CPU) ends with the weights of
one process at the same global batch, and only the main process writes the run folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "name": "small",
    "seeds": [0],
    "data": {"dataset": "digits", "train_subset": 200},
    "teacher": {"model": {"kind": "mlp", "hidden": [16]}, "train": {"epochs": 2, "cpu": True}},
    "student": {"model": {"kind": "mlp", "hidden": [8]}, "train": {"epochs": 2, "cpu": True}, "baseline": False},
    "distill": {"response_loss": "kd", "temperature": 4.0},
}
WEIGHTS = (
    "teacher/checkpoints/epoch-0001/model.safetensors",
    "seed-0/distilled/checkpoints/epoch-0001/model.safetensors",
)


def _write(folder: Path, recipe: dict, batch: int) -> Path:
    for part in ("teacher", "student"):
        recipe[part]["train"]["batch_size"] = batch
    path = folder / f"recipe-{batch}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _distill(out: Path, recipe: Path, processes: int) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command = [*launcher, "-m", "distill", "run", str(recipe), "--out", str(out), "--quiet"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _largest_difference(one: Path, other: Path, relative: str) -> float:
    first, second = load_file(one / relative), load_file(other / relative)
    assert first.keys() == second.keys()
    return max(float((first[name] - second[name]).abs().max()) for name in first)


@pytest.fixture(scope="module")
def single_process_runs(tmp_path_factory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("single")
    runs = {}
    for batch in (25, 50):
        runs[batch] = folder / f"out-{batch}"
        _distill(runs[batch], _write(folder, SMALL, batch), processes=1)
    return runs


def test_two_processes_train_the_weights_of_one_at_the_same_global_batch(tmp_path, single_process_runs):
    out = tmp_path / "two"
    _distill(out, _write(tmp_path, SMALL, 25), processes=2)  # 2 x 25 per step
    for relative in WEIGHTS:
        assert _largest_difference(out, single_process_runs[50], relative) < 1e-5
        assert _largest_difference(out, single_process_runs[25], relative) > 1e-4  # the test can tell them apart
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()
