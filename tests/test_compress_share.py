"""Cross-layer sharing (ALBERT style): the shared layer is the mean of its run, the model keeps its
outputs when its layers were equal, the bytes on disk fall, and a recipe shares, recovers and exports."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers

from distill.compress.share import is_shared, layer_list, runs_of, share_layers, unshared_copy
from distill.compress.sparse_io import load_compressed, save_compressed
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from tests.hf_models import tiny_bert, tiny_inputs
from tests.test_compress_text import _text_recipe


def test_runs_are_consecutive_and_as_even_as_possible():
    assert runs_of(4, 1) == [[0, 1, 2, 3]]
    assert runs_of(4, 2) == [[0, 1], [2, 3]]
    assert runs_of(5, 2) == [[0, 1, 2], [3, 4]]
    assert runs_of(3, 3) == [[0], [1], [2]]


def test_the_shared_layer_is_the_mean_of_its_run():
    model = tiny_bert(layers=4)
    name = "attention.self.query.weight"
    weights = [dict(layer.named_parameters())[name].detach().clone() for layer in layer_list(model)]
    before = sum(p.numel() for p in model.parameters())
    assert share_layers(model, groups=2) == [[0, 1], [2, 3]]
    layers = layer_list(model)
    assert layers[0] is layers[1] and layers[2] is layers[3] and layers[1] is not layers[2]
    first = dict(layers[0].named_parameters())[name]
    assert torch.allclose(first, (weights[0] + weights[1]) / 2)
    assert torch.allclose(dict(layers[2].named_parameters())[name], (weights[2] + weights[3]) / 2)
    per_layer = sum(p.numel() for p in layers[0].parameters())
    assert sum(p.numel() for p in model.parameters()) == before - 2 * per_layer  # two of four layers' worth gone
    assert is_shared(model) and not is_shared(tiny_bert(layers=4))


def test_sharing_equal_layers_keeps_the_outputs_and_the_file_stores_them_once(tmp_path):
    model = tiny_bert(layers=4)
    layers = layer_list(model)
    for index in range(1, 4):  # four equal layers: sharing them changes nothing but the storage
        layers[index] = copy.deepcopy(layers[0])
    inputs = tiny_inputs()
    expected = model(**inputs).logits
    separate = save_compressed(model.state_dict(), tmp_path / "separate.safetensors")
    share_layers(model, groups=1, init="mean")
    assert torch.allclose(model(**inputs).logits, expected, atol=1e-6)
    shared = save_compressed(model.state_dict(), tmp_path / "shared.safetensors")
    layer_bytes = 4 * sum(p.numel() for p in layers[0].parameters())
    assert separate - shared > 2.9 * layer_bytes  # three layers' copies are not written

    restored = load_compressed(tmp_path / "shared.safetensors")
    assert set(restored) == set(model.state_dict())
    fresh = tiny_bert(layers=4, seed=3)
    share_layers(fresh, groups=1)
    fresh.load_state_dict(restored)
    assert torch.equal(fresh(**inputs).logits, model(**inputs).logits)
    unshared = unshared_copy(model)
    assert not is_shared(unshared) and is_shared(model)
    assert torch.equal(unshared(**inputs).logits, model(**inputs).logits)


def test_bad_sharing_is_refused_with_a_sentence():
    with pytest.raises(ValueError, match="groups 5 is more than the model's 4 layers"):
        share_layers(tiny_bert(layers=4), groups=5)
    model = tiny_bert(layers=2)
    with torch.no_grad():  # layer 1 with one head fewer, as after head pruning
        layer_list(model)[1].attention.self.query = torch.nn.Linear(16, 8)
    with pytest.raises(ValueError, match="different shapes"):
        share_layers(model, groups=1)


def test_a_recipe_shares_recovers_and_exports_smaller(tmp_path):
    steps = [
        {"share_layers": {"groups": 1}},
        {"distill": {"epochs": 2, "teacher": "teacher"}},
        {"export": {"format": "onnx"}},
    ]
    raw = _text_recipe(tmp_path, steps, epochs=2, lr=1e-2)
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    rows = {row["label"]: row for row in results["rows"]}
    distilled, shared = rows["student, distilled"], rows["share layers (one set of weights, mean)"]
    layer = 4 * sum(p.numel() for p in layer_list(tiny_bert(layers=2))[0].parameters())  # fp32 bytes, same shape
    assert distilled["size_bytes"] - shared["size_bytes"] == pytest.approx(layer, rel=0.05)
    assert rows["export onnx"]["details"]["parity"]["max_abs_diff"] < 1e-4

    raw["compress"][-1] = {"export": {"format": "hf"}}  # stock transformers: each layer written, same outputs
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", resume=True, show_progress=False)
    exported = {row["label"]: row for row in results["rows"]}["export hf"]
    assert exported["details"]["parity"]["max_abs_diff"] < 1e-4
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "run/seed-0/compress/03-export")
    assert loaded.config.num_hidden_layers == 2


def test_structured_pruning_after_sharing_is_refused(tmp_path):
    raw = _text_recipe(tmp_path, [{"share_layers": {}}, {"prune": {"structure": "ffn"}}], epochs=1, lr=1e-2)
    with pytest.raises(ValueError, match="after share_layers would cut the shared layer once per position"):
        run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
