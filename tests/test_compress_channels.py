"""Channel pruning of convolutional students with torch-pruning's dependency graph: convs, their batch
norms and the layers that read them shrink together; the classifier keeps its outputs."""

from __future__ import annotations

import torch

from distill.compress.channels import prune_channels, recalibrate_batchnorm
from distill.core.batch import as_batch
from distill.models.cnn1d import SmallCNN1d
from distill.models.mlp import SmallCNN
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from tests.test_compress import _recipe


def test_half_the_channels_of_every_conv_are_removed_and_the_logits_keep_their_shape():
    torch.manual_seed(0)
    model = SmallCNN((1, 8, 8), [16, 32], 10)
    before = sum(p.numel() for p in model.parameters())
    removed = prune_channels(model, torch.randn(2, 1, 8, 8), 0.5)
    assert [model.block1.conv.out_channels, model.block2.conv.out_channels] == [8, 16]
    assert model.block2.bn.num_features == 16 and model.head.in_features == 16 and model.head.out_features == 10
    assert removed == before - sum(p.numel() for p in model.parameters()) > 0.5 * before
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    line = SmallCNN1d((1, 40), [8, 8], 10)
    prune_channels(line, torch.randn(2, 1, 40), 0.25)
    assert line.block1.conv.out_channels == 6 and line(torch.randn(2, 1, 40)).shape == (2, 10)


def test_batchnorm_statistics_are_re_estimated_as_the_average_over_the_batches():
    torch.manual_seed(0)
    model = SmallCNN1d((1, 12), [4], 3).eval()
    batches = [torch.randn(5, 1, 12) * 3 + 1, torch.randn(5, 1, 12) - 2]
    features = [model.block1.conv(b) for b in batches]  # what the BatchNorm reads: (batch, channel, length)
    means = torch.stack([f.mean((0, 2)) for f in features]).mean(0)
    variances = torch.stack([f.var((0, 2), unbiased=True) for f in features]).mean(0)
    momentum = model.block1.bn.momentum
    assert recalibrate_batchnorm(model, [as_batch((b, torch.zeros(5, dtype=torch.long))) for b in batches]) == 1
    assert torch.allclose(model.block1.bn.running_mean, means, atol=1e-5)
    assert torch.allclose(model.block1.bn.running_var, variances, atol=1e-4)
    assert not model.training and model.block1.bn.momentum == momentum


def test_channel_pruning_with_recovery_and_onnx_export_in_a_recipe(tmp_path):
    raw = _recipe(
        [
            {"prune": {"structure": "channels", "amount": 0.5, "method": "taylor", "batches": 2}},
            {"distill": {"epochs": 1}},
            "export",
        ]
    )
    raw["teacher"]["model"] = {"kind": "cnn", "channels": [16, 32]}
    raw["student"]["model"] = {"kind": "cnn", "channels": [16, 16]}
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    distilled, pruned, recovered, export = results["rows"]
    assert pruned["label"] == "prune 50% of channels, global (taylor)"
    assert recovered["parameters"] == pruned["parameters"] < 0.5 * distilled["parameters"]
    assert export["details"]["parity"]["max_abs_diff"] < 1e-4
