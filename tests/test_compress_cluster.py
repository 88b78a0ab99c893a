"""Weight clustering: k-means on each layer's weights, at most 2^bits values per layer through training
(centroids fine-tuned by distillation), stored as a codebook plus b-bit indices."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from distill.compress.cluster import ClusterTies, cluster_weight, kmeans_1d
from distill.compress.sparse_io import load_compressed, save_compressed
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from tests.test_compress import _recipe


def test_kmeans_finds_separated_groups_from_a_linear_start():
    values = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.9, 10.0], dtype=torch.float64)
    centroids, assignment = kmeans_1d(values, 3)
    assert torch.allclose(centroids, torch.tensor([0.1, 5.05, 9.95], dtype=torch.float64))
    assert assignment.tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_clustered_weights_keep_at_most_two_to_the_bits_values_and_zeros_stay_zero():
    torch.manual_seed(0)
    weight = torch.randn(20, 30)
    weight[:, :5] = 0  # pruned before: zeros are a cluster of their own
    codes = cluster_weight(weight, bits=3)
    assert len(torch.unique(weight)) <= 8 and bool((weight[:, :5] == 0).all())
    assert bool((codes[:, :5] == -1).all()) and int(codes.max()) <= 6  # 7 non-zero clusters + zero
    # an optimizer step moves weights apart; the ties put each back on its cluster's mean
    parameter = torch.nn.Parameter(weight.clone())
    model = torch.nn.Module()
    model.weight = parameter
    with torch.no_grad():
        parameter.add_(0.01 * torch.randn_like(parameter))
    expected = {int(k): float(parameter[codes == k].mean()) for k in torch.unique(codes) if k >= 0}
    ClusterTies(model, {"weight": codes}).apply()
    assert len(torch.unique(parameter)) <= 8 and bool((parameter[:, :5] == 0).all())
    assert all(abs(float(parameter[codes == k][0]) - mean) < 1e-6 for k, mean in expected.items())


def test_codebook_storage_round_trips_and_costs_bits_not_floats(tmp_path):
    torch.manual_seed(0)
    weight = torch.randn(64, 64)
    cluster_weight(weight, bits=4)
    size = save_compressed({"w": weight}, tmp_path / "w.safetensors")
    assert torch.equal(load_compressed(tmp_path / "w.safetensors")["w"], weight)
    assert "w" not in load_file(tmp_path / "w.safetensors")
    assert size < 64 * 64 * 4 / 6  # 4-bit indices: an eighth of fp32, plus the header


def test_cluster_then_recover_keeps_the_codebook_size_through_training(tmp_path):
    raw = _recipe([{"cluster": {"bits": 2}}, {"distill": {"epochs": 1}}])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    distilled, clustered, recovered = results["rows"]
    assert clustered["label"] == "cluster weights (4 values per layer)"
    weights = load_compressed(tmp_path / "run/seed-0/compress/02-distill/model.safetensors")
    for name in ("fc1.weight", "head.weight"):
        assert len(torch.unique(weights[name])) <= 4, name
    assert recovered["size_bytes"] < 0.3 * distilled["size_bytes"]
