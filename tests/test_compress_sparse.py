"""Sparse training from scratch: SNIP's connection sensitivity at initialisation, RigL's drop-and-grow
with the cosine drop fraction and the ERK distribution; the sparsity stays exact after every update."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.compress import rigl as rigl_module
from distill.compress.masks import kept_count, prunable_weights
from distill.compress.prune import first_order_scores
from distill.compress.rigl import (
    RigL,
    RigLUpdates,
    drop_and_grow,
    drop_fraction,
    erk_densities,
    random_masks,
    reset_optimizer_state,
)
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from tests.test_compress import _recipe


def test_erk_densities_follow_the_dims_and_cap_small_layers_dense():
    # a: 10x10, Σ/Π = 20/100; b: 100x1000, Σ/Π = 1100/100000. At total density 0.5, ε = 50050 / 1120
    # would give a a density of 8.9, so a is dense and ε = (50050 - 100) / 1100 for b.
    densities = erk_densities({"a": torch.Size([10, 10]), "b": torch.Size([100, 1000])}, 0.5)
    assert densities["a"] == 1.0
    assert densities["b"] == pytest.approx((50050 - 100) / 1100 * 1100 / 100000)
    shapes = {"c": torch.Size([30, 40]), "d": torch.Size([40, 50]), "e": torch.Size([8, 4, 3])}
    spread = erk_densities(shapes, 0.2)  # nothing capped: the total is exact and the ratios are Σ/Π's
    total = sum(math.prod(s) for s in shapes.values())
    assert sum(spread[n] * math.prod(s) for n, s in shapes.items()) == pytest.approx(0.2 * total)
    assert spread["c"] / spread["d"] == pytest.approx((70 / 1200) / (90 / 2000))
    masks = random_masks(shapes, spread, torch.Generator().manual_seed(0))
    assert all(int(masks[n].sum()) == kept_count(math.prod(s), 1 - spread[n]) for n, s in shapes.items())


def test_cosine_drop_fraction():
    assert drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert drop_fraction(100, 0.3, 100) == pytest.approx(0.0)


def test_drop_and_grow_by_hand():
    weight = torch.tensor([0.5, -0.1, 0.0, 0.0, 0.3, 0.0])
    active = torch.tensor([True, True, False, False, True, False])
    grad = torch.tensor([0.0, 0.0, 0.2, -0.9, 0.0, 0.1])
    # 3 active, ⌊0.34 · 3⌋ = 1 dropped: -0.1 (smallest |w|); 1 grown among the rest: |g| = 0.9 at index 3
    new = drop_and_grow(weight, grad, active, 0.34)
    assert new.tolist() == [True, False, False, True, True, False]
    # a just-dropped weight may be grown back when its gradient is the largest
    regrown = drop_and_grow(weight, torch.tensor([0.0, 5.0, 0.2, 0.1, 0.0, 0.0]), active, 0.34)
    assert regrown.tolist() == active.tolist()
    assert torch.equal(drop_and_grow(weight, grad, active, 0.1), active)  # ⌊0.3⌋ = 0: unchanged


def test_optimizer_state_is_reset_where_asked():
    layer = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    layer(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    where = torch.tensor([[True, False, False], [False, False, True]])
    before = {k: v.clone() for k, v in optimizer.state[layer.weight].items()}
    reset_optimizer_state(optimizer, layer.weight, where)
    for key in ("exp_avg", "exp_avg_sq"):
        value = optimizer.state[layer.weight][key]
        assert bool((value[where] == 0).all()) and torch.equal(value[~where], before[key][~where])
    assert torch.equal(optimizer.state[layer.weight]["step"], before["step"])


def test_snip_sensitivity_is_the_gradient_with_respect_to_a_connection_gate():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3)
    inputs, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    # Lee et al. (2019), eq. 6: g_j = ∂L(c ⊙ w)/∂c_j at c = 1, the sensitivity |g_j|
    gate = torch.ones_like(layer.weight, requires_grad=True)
    loss = nn.functional.cross_entropy(nn.functional.linear(inputs, gate * layer.weight, layer.bias), labels)
    (by_gate,) = torch.autograd.grad(loss, gate)
    losses = [nn.functional.cross_entropy(layer(inputs), labels)]
    scores = first_order_scores({"weight": layer.weight}, losses)
    torch.testing.assert_close(scores["weight"], by_gate.abs())


def _weights_at_start(monkeypatch, kind: str) -> list[dict[str, torch.Tensor]]:
    """Capture the prunable weights each ``kind`` training starts from (patched Trainer entry)."""
    from distill.strategies.context import RunContext

    starts: list[dict[str, torch.Tensor]] = []
    original = RunContext.train

    def record(self, objective, run_dir, *args, **kwargs):
        if kind in run_dir.name:
            starts.append({n: w.detach().clone() for n, w in prunable_weights(objective.model).items()})
        return original(self, objective, run_dir, *args, **kwargs)

    monkeypatch.setattr(RunContext, "train", record)
    return starts


@pytest.mark.parametrize(("teacher", "how"), [("none", "labels"), ("teacher", "distilled")])
def test_snip_prunes_a_fresh_initialisation_and_keeps_the_mask_fixed(tmp_path, monkeypatch, teacher, how):
    starts = _weights_at_start(monkeypatch, "snip")
    raw = _recipe([{"snip": {"sparsity": 0.8, "epochs": 2, "teacher": teacher}}])
    recipe = validate_recipe(raw)
    results = run_recipe(recipe, raw, tmp_path / "run", show_progress=False)
    row = results["rows"][-1]
    assert row["label"] == f"SNIP 80% sparse from scratch ({how})"
    from distill.run.runner import make_context

    fresh = prunable_weights(make_context(recipe, raw, tmp_path / "other", show_progress=False).build_student(0))
    (start,) = starts
    total = sum(w.numel() for w in start.values())
    assert sum(int((w != 0).sum()) for w in start.values()) == kept_count(total, 0.8)
    for name, weight in start.items():  # survivors are the initialisation's values, not the distilled ones
        kept = weight != 0
        assert torch.equal(weight[kept], fresh[name][kept])
    assert row["nonzero_parameters"] <= row["parameters"] - (total - kept_count(total, 0.8))


def test_rigl_keeps_each_layers_count_exact_and_really_moves_the_mask(tmp_path, monkeypatch):
    seen = []  # after each mask update: the active count per layer, and whether weights off the mask are zero
    original = RigLUpdates.__call__

    def spy(self, step, total_steps, optimizer):
        before = {n: m.clone() for n, m in self.objective.masks().items()}
        updated = original(self, step, total_steps, optimizer)
        masks = self.objective.masks()
        grown = {n: masks[n].bool() & ~before[n].bool() for n in masks}
        states = getattr(optimizer, "optimizer", optimizer).state
        seen.append(
            {
                "updated": updated,
                "counts": {n: int(m.sum()) for n, m in masks.items()},
                "changed": any(bool(grown[n].any()) for n in masks),
                "grown_zero": all(bool((self.parameters[n][grown[n]] == 0).all()) for n in masks),
                "moments_reset": updated
                and all(bool((states[self.parameters[n]]["exp_avg"][grown[n]] == 0).all()) for n in masks),
            }
        )
        return updated

    monkeypatch.setattr(RigLUpdates, "__call__", spy)
    step = {"rigl": {"sparsity": 0.7, "epochs": 4, "every": 2, "distribution": "uniform", "teacher": "teacher"}}
    raw = _recipe([step])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    updates = [s for s in seen if s["updated"]]
    # 320 examples / 64 = 5 steps an epoch, 20 in all: updates at 2, 4, ..., 14 (T_end = 0.75 · 20 = 15)
    assert len(updates) == 7 and len(seen) == 20
    first = updates[0]["counts"]
    assert all(s["counts"] == first for s in updates)  # each layer's count never changes
    assert sorted(first.values()) == sorted([kept_count(32 * 64, 0.7), kept_count(10 * 32, 0.7)])  # 64-32-10
    assert all(s["changed"] and s["grown_zero"] and s["moments_reset"] for s in updates)
    row = results["rows"][-1]
    assert row["label"] == "RigL 70% sparse from scratch (uniform, distilled)"
    assert row["details"]["rigl_mask_updates"] == 7


def test_rigl_masks_start_at_the_distribution(tmp_path):
    raw = _recipe([])
    from distill.run.runner import make_context

    context = make_context(validate_recipe(raw), raw, tmp_path, show_progress=False)
    model = context.build_student(0)
    shapes = {n: w.shape for n, w in prunable_weights(model).items()}
    uniform = RigL(sparsity=0.75, distribution="uniform").initial_masks(model, 3)
    assert {n: int(m.sum()) for n, m in uniform.items()} == {
        n: kept_count(math.prod(s), 0.75) for n, s in shapes.items()
    }
    erk = RigL(sparsity=0.75).initial_masks(model, 3)
    densities = rigl_module.erk_densities(shapes, 0.25)
    assert {n: int(m.sum()) for n, m in erk.items()} == {
        n: kept_count(math.prod(s), 1 - densities[n]) for n, s in shapes.items()
    }


def test_gradual_magnitude_pruning_on_labels_trains_without_a_teacher(tmp_path, monkeypatch):
    from distill.core.objective import SupervisedObjective
    from distill.strategies.context import RunContext

    inner = []
    original = RunContext.train

    def record(self, objective, run_dir, *args, **kwargs):
        if "prune" in run_dir.name:
            inner.append(type(objective.objective))
        return original(self, objective, run_dir, *args, **kwargs)

    monkeypatch.setattr(RunContext, "train", record)
    schedule = {"kind": "cubic", "steps": 10, "every": 2, "teacher": "none"}
    raw = _recipe([{"prune": {"amount": 0.6, "schedule": schedule}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    assert inner == [SupervisedObjective]
    total = 32 * 64 + 10 * 32
    assert results["rows"][-1]["nonzero_parameters"] == results["rows"][-1]["parameters"] - (
        total - kept_count(total, 0.6)
    )
