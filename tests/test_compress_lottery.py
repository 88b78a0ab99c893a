"""Lottery tickets: iterative magnitude pruning with resetting to the initialisation (or step k), and the
random re-initialisation control; the sparsity after each round is exact."""

from __future__ import annotations

import pytest
import torch

from distill.compress.base import CompressState
from distill.compress.lottery import Lottery, lottery_rounds
from distill.compress.masks import kept_count, prunable_weights
from distill.run.recipe import validate_recipe
from distill.run.runner import make_context, run_recipe
from tests.test_compress import _recipe


def _state(tmp_path, raw) -> CompressState:
    recipe = validate_recipe(raw)
    context = make_context(recipe, raw, tmp_path / "run", show_progress=False)
    student = context.build_student(0)
    return CompressState(context, 0, student, tmp_path / "run" / "compress", context.task)


@pytest.mark.parametrize("reinit", [False, True])
def test_each_round_prunes_the_rate_of_survivors_and_resets_them(tmp_path, reinit, monkeypatch):
    raw = _recipe([])
    state = _state(tmp_path, raw)
    initial = {n: w.detach().clone() for n, w in prunable_weights(state.context.build_student(0)).items()}
    starts = []  # the weights each pruning round starts training from

    original = state.context.train

    def record(objective, run_dir, *args, **kwargs):
        if run_dir.name != "round-0":
            starts.append({n: w.detach().clone() for n, w in prunable_weights(objective.model).items()})
        return original(objective, run_dir, *args, **kwargs)

    monkeypatch.setattr(state.context, "train", record)
    spec = Lottery(rounds=2, rate=0.5, epochs=1, reinit=reinit)
    rounds = list(lottery_rounds(state, spec, 1))
    assert [(r, left) for r, left, _ in rounds] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    total = sum(w.numel() for w in initial.values())
    for start, left in zip(starts, (0.5, 0.25), strict=True):
        zeros = sum(int((w == 0).sum()) for w in start.values())
        assert zeros == total - kept_count(total, 1 - left)
        survivors = {n: w != 0 for n, w in start.items()}
        same = all(torch.equal(start[n][survivors[n]], initial[n][survivors[n]]) for n in start)
        assert same is not reinit  # survivors back at their initial values, or fresh random ones
    final = rounds[-1][2]
    assert sum(int((w == 0).sum()) for w in prunable_weights(final).values()) == total - kept_count(total, 0.75)


def test_a_lottery_step_in_a_recipe_with_late_resetting(tmp_path):
    raw = _recipe([{"lottery": {"rounds": 1, "rate": 0.6, "epochs": 1, "rewind": 2}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    row = results["rows"][-1]
    assert row["label"] == "lottery ticket, 40.0% of weights (reset to step 2)"
    assert row["nonzero_parameters"] < 0.5 * row["parameters"]
