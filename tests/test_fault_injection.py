"""Kill a run with SIGKILL at 25 points (after optimizer steps, and inside each stage of the checkpoint writer:
each file, staged, renamed, latest.json written, pruned) and check that resuming ends bit-identical to a run
that was never killed. ``DISTILL_KILL_AT`` (distill.train.faults) names the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.kill_run import train

ROOT = Path(__file__).resolve().parent.parent
# NAME#N: the N-th time the point is reached. 9 checkpoints are written (6 step, 3 epoch), 15 steps taken.
POINTS = [
    *(f"step#{n}" for n in (1, 2, 4, 5, 6, 9, 10, 11, 14, 15)),
    "checkpoint:model.safetensors#1",
    "checkpoint:model.safetensors#3",
    "checkpoint:optimizer.safetensors#2",
    "checkpoint:optimizer.safetensors#6",
    "checkpoint:rng.safetensors#3",
    "checkpoint:staged#1",
    "checkpoint:staged#3",
    "checkpoint:staged#9",
    "checkpoint:renamed#2",
    "checkpoint:renamed#6",
    "checkpoint:latest#3",
    "checkpoint:latest#7",
    "checkpoint:done#1",
    "checkpoint:done#5",
    "checkpoint:done#9",
]


DOUBLE = ["checkpoint:rng.safetensors#2", "step#4"]  # inside the 2nd checkpoint, then 4 steps into the resumed run


def _folder(point: str) -> str:
    return point.replace(":", "-").replace("#", "-")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return train(str(tmp_path_factory.mktemp("reference")), resume=False)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Every run killed at its point, in one process that forks a child per kill (one torch import)."""
    root = tmp_path_factory.mktemp("killed")
    pairs = [f"{_folder(point)}={point}" for point in POINTS] + [f"twice={point}" for point in DOUBLE]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.kill_run", str(root), *pairs], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


def _resumes_bit_identical(folder: Path, reference: dict) -> bool:
    resumed = train(str(folder), resume=True)
    return resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_there_are_at_least_twenty_points():
    assert len(set(POINTS)) >= 20


@pytest.mark.parametrize("point", POINTS)
def test_a_run_killed_at_any_point_resumes_bit_identical(killed, reference, point):
    root, ended = killed
    assert ended[_folder(point)] == [-signal.SIGKILL], f"{point} was not reached"
    assert _resumes_bit_identical(root / _folder(point), reference)


def test_a_run_killed_twice_resumes_bit_identical(killed, reference):
    root, ended = killed
    assert ended["twice"] == [-signal.SIGKILL, -signal.SIGKILL]
    assert _resumes_bit_identical(root / "twice", reference)
