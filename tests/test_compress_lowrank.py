"""Low-rank factorisation: at full rank the layer is reproduced; the energy rule picks the smallest rank;
a factorised model trains, exports to ONNX with parity, and is refused by the hf export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.compress.lowrank import (
    FactorisedEmbedding,
    chosen_rank,
    factorise_conv1x1,
    factorise_embedding,
    factorise_linear,
)
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.runner import run_recipe
from tests.test_compress import _recipe


def test_full_rank_reproduces_linear_conv_and_embedding():
    torch.manual_seed(0)
    linear = nn.Linear(12, 40)
    with torch.no_grad():  # a weight of rank 3: factorised at its full rank it is reproduced
        linear.weight.copy_(torch.randn(40, 3) @ torch.randn(3, 12))
    x = torch.randn(5, 12)
    split = factorise_linear(linear, rank=3, energy=None)
    assert sum(p.numel() for p in split.parameters()) < sum(p.numel() for p in linear.parameters())
    assert torch.allclose(split(x), linear(x), atol=1e-5)
    conv = nn.Conv1d(12, 40, 1)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.unsqueeze(-1))
    signal = torch.randn(2, 12, 7)
    assert torch.allclose(factorise_conv1x1(conv, 3, None)(signal), conv(signal), atol=1e-5)
    table = nn.Embedding(50, 8)
    ids = torch.randint(0, 50, (3, 4))
    factored = factorise_embedding(table, 8, None)
    assert isinstance(factored, FactorisedEmbedding) is False  # 50x8 at rank 8 saves nothing: kept whole
    with torch.no_grad():
        table.weight.copy_(torch.randn(50, 2) @ torch.randn(2, 8))
    factored = factorise_embedding(table, 2, None)
    assert isinstance(factored, FactorisedEmbedding) and torch.allclose(factored(ids), table(ids), atol=1e-5)


def test_a_layer_that_would_grow_is_kept_and_energy_picks_the_smallest_rank():
    square = nn.Linear(10, 10)
    assert factorise_linear(square, rank=6, energy=None) is square  # 6 * 20 > 100
    singular = torch.tensor([3.0, 2.0, 1.0, 0.0])  # σ² = 9, 4, 1, 0: cumulative 9/14, 13/14, 1
    assert chosen_rank(singular, None, 0.6) == 1
    assert chosen_rank(singular, None, 0.9) == 2
    assert chosen_rank(singular, None, 1.0) == 3
    assert chosen_rank(singular, 10, None) == 4


def test_low_rank_then_recovery_then_onnx_in_a_recipe(tmp_path):
    raw = _recipe([{"low_rank": {"energy": 0.8}}, {"distill": {"epochs": 1}}, "export"], hidden=[64])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    distilled, factorised, recovered, export = results["rows"]
    assert recovered["parameters"] == factorised["parameters"]  # recovery trains the factorised layers
    assert factorised["label"] == "low rank (80% energy)"
    assert factorised["parameters"] < distilled["parameters"]
    assert export["details"]["parity"]["max_abs_diff"] < 1e-4
    with pytest.raises(RecipeError, match="give one of rank"):
        validate_recipe(_recipe([{"low_rank": {}}]))
