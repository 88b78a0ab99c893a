"""Compression steps: exact pruning masks and schedules, masks kept through training and resume, sparse
storage, ONNX export with parity, int8 quantisation, and the ``compress:`` recipe list end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distill.compress.masks import (
    cubic_sparsity,
    kept_count,
    masks_for,
    prunable_weights,
)
from distill.compress.onnx_model import OnnxModel, ParityError, export_onnx, parity
from distill.compress.sparse_io import load_compressed, save_compressed
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.runner import run_recipe
from tests.interrupt import killed_after_epoch


def test_global_and_per_layer_masks_prune_exactly_the_smallest_weights():
    scores = {"a": torch.tensor([[0.1, 5.0], [0.3, 4.0]]), "b": torch.tensor([0.2, 0.05, 3.0, 2.0])}
    glob = masks_for(scores, 0.5, "global")  # 8 weights, the 4 smallest: 0.05, 0.1, 0.2, 0.3
    assert glob["a"].tolist() == [[0, 1], [0, 1]] and glob["b"].tolist() == [0, 0, 1, 1]
    layer = masks_for(scores, 0.25, "layer")  # one of four in each layer
    assert layer["a"].tolist() == [[0, 1], [1, 1]] and layer["b"].tolist() == [1, 0, 1, 1]
    assert kept_count(10, 0.55) == 4  # at least the asked sparsity
    tied = masks_for({"c": torch.zeros(10)}, 0.3)  # ties broken, the count stays exact
    assert int(tied["c"].sum()) == 7


def test_cubic_schedule_follows_zhu_and_gupta():
    final, steps = 0.8, 100
    assert cubic_sparsity(0, final, steps) == 0.0
    assert cubic_sparsity(50, final, steps) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(100, final, steps) == pytest.approx(0.8)
    assert cubic_sparsity(250, final, steps) == pytest.approx(0.8)
    values = [cubic_sparsity(t, final, steps) for t in range(0, 101, 10)]
    assert values == sorted(values) and values[1] - values[0] > values[-1] - values[-2]  # fast, then slow


def test_prunable_weights_are_linear_and_conv_outside_skip():
    model = nn.Sequential(nn.Conv1d(1, 4, 3), nn.LayerNorm(4), nn.Linear(4, 3))
    assert sorted(prunable_weights(model)) == ["0.weight", "2.weight"]
    assert sorted(prunable_weights(model, skip=["2"])) == ["0.weight"]


def test_sparse_storage_round_trips_exactly_and_takes_fewer_bytes(tmp_path):
    torch.manual_seed(0)
    dense = torch.randn(64, 64)
    sparse = dense * (torch.rand(64, 64) > 0.9)
    state = {"dense": dense, "sparse": sparse, "ids": torch.arange(5)}
    size = save_compressed(state, tmp_path / "w.safetensors")
    back = load_compressed(tmp_path / "w.safetensors")
    assert all(torch.equal(back[name], value) for name, value in state.items())
    assert "sparse" not in load_file(tmp_path / "w.safetensors")  # stored as mask + values
    assert size < 64 * 64 * 4 + 64 * 64 * 4 * 0.2 + 1024  # the sparse one costs ~1/8 + 10% of its dense bytes


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def test_onnx_export_matches_pytorch_and_parity_fails_loudly(tmp_path):
    model = _mlp().eval()
    export_onnx(model, torch.randn(4, 8), tmp_path / "m.onnx")
    served = OnnxModel(tmp_path / "m.onnx")
    held_out = [torch.randn(7, 8), torch.randn(1, 8)]  # other batch sizes than the traced one
    report = parity(model, served, held_out)
    assert report["max_abs_diff"] < 1e-5 and report["agreement"] == 1.0 and report["compared"] == 8
    assert served.deployed_parameters() == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        model[2].bias += 1.0  # the artefact no longer is this model
    with pytest.raises(ParityError, match=r"max \|logit difference\| 1 \(allowed 0.001\)"):
        parity(model, served, held_out)


def test_masks_stay_applied_through_training_and_resume_exactly(tmp_path, monkeypatch, digits):
    raw = _recipe(
        [{"prune": {"amount": 0.7, "schedule": {"kind": "cubic", "steps": 30, "every": 4}}}, {"distill": {"epochs": 2}}]
    )
    whole = run_recipe(validate_recipe(raw), raw, tmp_path / "a", show_progress=False)
    with killed_after_epoch(monkeypatch, 0, where=lambda folder: "02-distill" in folder):
        run_recipe(validate_recipe(raw), raw, tmp_path / "b", show_progress=False)
    resumed = run_recipe(validate_recipe(raw), raw, tmp_path / "b", resume=True, show_progress=False)

    final = {run: load_compressed(tmp_path / run / "seed-0/compress/02-distill/model.safetensors") for run in "ab"}
    assert all(torch.equal(final["a"][name], final["b"][name]) for name in final["a"])
    assert [r["score"] for r in whole["rows"]] == [r["score"] for r in resumed["rows"]]
    weights = [final["a"][name] for name in ("fc1.weight", "head.weight")]
    total, zeros = sum(w.numel() for w in weights), sum(int((w == 0).sum()) for w in weights)
    assert zeros == total - kept_count(total, 0.7)  # the final sparsity, exact, still after the recovery
    for name in ("prune", "distill"):
        row = next(r for r in whole["rows"] if r["role"] == "compressed" and name in r["label"])
        assert row["parameters"] - row["nonzero_parameters"] == zeros


def _recipe(compress: list, **student) -> dict:
    settings = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "adamw", "lr": 0.01}, "log_every": 5}
    return {
        "data": {"dataset": "digits", "train_subset": 320},
        "teacher": {"model": {"kind": "mlp", "hidden": [64]}, "train": settings},
        "student": {"model": {"kind": "mlp", "hidden": [32], **student}, "baseline": False, "train": settings},
        "compress": compress,
    }


def test_recipe_steps_are_one_key_mappings_with_errors_that_list_what_is_allowed():
    recipe = validate_recipe(_recipe([{"prune": {"amount": 0.5}}, "quantize", {"export": None}]))
    assert [step.kind for step in recipe.compress] == ["prune", "quantize", "export"]
    with pytest.raises(
        RecipeError,
        match=r"unknown compress step 'squash'; known compress steps: cluster, distill, export, lottery, low_rank",
    ):
        validate_recipe(_recipe([{"squash": {}}]))
    with pytest.raises(RecipeError, match=r"compress\[0\].*unknown key.*amount"):
        validate_recipe(_recipe([{"prune": {"amont": 0.5}}]))
    with pytest.raises(RecipeError, match=r"compress\[0\]\.amount"):
        validate_recipe(_recipe([{"prune": {"amount": 1.5}}]))


def test_a_weights_step_after_quantize_is_refused(tmp_path):
    raw = _recipe(["quantize", {"prune": {"amount": 0.5}}])
    with pytest.raises(ValueError, match=r"prune changes PyTorch weights, but an earlier step already turned"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)


def test_distil_prune_recover_quantize_export_gives_the_deployment_table(tmp_path):
    raw = _recipe([{"prune": {"amount": 0.6}}, {"distill": {"epochs": 1}}, "quantize", {"export": {"format": "onnx"}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    rows = {row["label"]: row for row in results["rows"]}
    labels = list(rows)
    steps = ["prune 60% global (magnitude)", "distill 1 ep from the model before", "int8 dynamic (ONNX Runtime)"]
    assert labels[1:] == [*steps, "export onnx"]
    distilled, pruned = rows["student, distilled"], rows["prune 60% global (magnitude)"]
    assert pruned["nonzero_parameters"] < 0.5 * distilled["nonzero_parameters"]
    assert pruned["size_bytes"] < 0.7 * distilled["size_bytes"]  # the zeros are not stored
    export = rows["export onnx"]
    assert export["details"]["parity"]["agreement"] >= 0.95
    onnx_file = tmp_path / "run/seed-0/compress/04-export/model.onnx"
    assert export["size_bytes"] == onnx_file.stat().st_size
    # the int8 file serves on its own: its accuracy is the table's
    served = OnnxModel(onnx_file)
    from distill.tasks.registry import load_task

    task = load_task(validate_recipe(raw))
    assert task.score(served) == pytest.approx(export["score"]["mean"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "% of teacher" in report and "non-zero" in report
    json.dumps(results)  # results stay plain JSON


def test_first_order_scores_are_weight_times_gradient_summed_over_batches():
    from distill.compress.prune import first_order_scores

    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]]))
    x1, x2 = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[-1.0, 0.0, 2.0]])
    # L = Σ (W x)²/2 per batch: ∂L/∂W = (W x) xᵀ
    losses = (0.5 * layer(x).pow(2).sum() for x in (x1, x2))
    scores = first_order_scores({"weight": layer.weight}, losses)
    w = layer.weight.detach()
    expected = sum((w * ((w @ x.T) @ x)).abs() for x in (x1, x2))
    assert torch.allclose(scores["weight"], expected)


def test_taylor_pruning_runs_from_a_recipe(tmp_path):
    raw = _recipe([{"prune": {"method": "taylor", "amount": 0.5, "scope": "layer", "batches": 2}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    row = results["rows"][-1]
    assert row["label"] == "prune 50% layer (taylor)"
    weights = load_compressed(tmp_path / "run/seed-0/compress/01-prune/model.safetensors")
    assert [float((weights[n] == 0).float().mean()) for n in ("fc1.weight", "head.weight")] == [0.5, 0.5]


def test_static_int8_calibrates_on_training_batches_and_keeps_the_predictions(tmp_path):
    raw = _recipe([{"quantize": {"mode": "int8_static", "calibration_batches": 2, "min_agreement": 0.9}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    distilled, static = results["rows"]
    assert static["label"] == "int8 static (ONNX Runtime)" and static["details"]["parity"]["agreement"] >= 0.9
    assert abs(static["score"]["mean"] - distilled["score"]["mean"]) < 0.05
    import onnx

    graph = onnx.load(str(tmp_path / "run/seed-0/compress/01-quantize/model.onnx")).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)  # activations quantised too
