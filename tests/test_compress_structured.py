"""Structured pruning of transformers: FFN neurons and attention heads removed for real; removing only
units that contribute nothing leaves the outputs unchanged; uniform FFN widths load with stock transformers."""

from __future__ import annotations

import pytest
import torch
import transformers

from distill.compress.structured import (
    ffn_magnitude,
    grouped_first_order,
    head_magnitude,
    heads_to_keep,
    layer_parts,
    prune_ffn,
    prune_heads,
)
from tests.hf_models import tiny_config

FAMILIES = {
    "bert": transformers.BertForSequenceClassification,
    "distilbert": transformers.DistilBertForSequenceClassification,
    "roberta": transformers.RobertaForSequenceClassification,
}


def _model(family: str = "bert") -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "distilbert":
        config = transformers.DistilBertConfig(
            vocab_size=60, dim=16, n_layers=2, n_heads=4, hidden_dim=32, num_labels=3, attn_implementation="eager"
        )
    else:
        config = tiny_config(layers=2, heads=4)
        if family == "roberta":
            config = transformers.RobertaConfig(**{**config.to_dict(), "pad_token_id": 1})
    return FAMILIES[family](config).eval()


def _inputs() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"input_ids": torch.randint(5, 60, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_removing_units_that_contribute_nothing_keeps_the_outputs(family):
    model = _model(family)
    parts = layer_parts(model)
    with torch.no_grad():
        for part in parts:
            part.ffn_out.weight[:, ::2] = 0  # half the FFN neurons feed nothing forward
            part.output.weight[:, : part.head_size] = 0  # head 0 of each layer feeds nothing forward
        before = model(**_inputs()).logits
    ffn, heads = [ffn_magnitude(p) for p in parts], [head_magnitude(p) for p in parts]
    assert all(bool((score[::2] == 0).all()) and bool((score[1::2] > 0).all()) for score in ffn)
    assert all(float(score[0]) == 0 and bool((score[1:] > 0).all()) for score in heads)
    width = parts[0].ffn_in.out_features
    prune_ffn(model, parts, ffn, width // 2)
    prune_heads(parts, heads_to_keep(heads, 0.25, "layer"))
    with torch.no_grad():
        after = model(**_inputs()).logits
    assert torch.allclose(before, after, atol=1e-5)
    assert all(p.ffn_in.out_features == width // 2 and p.heads == 3 for p in parts)
    shrunk = sum(p.numel() for p in model.parameters())
    assert shrunk < sum(p.numel() for p in _model(family).parameters())


def test_a_uniform_ffn_width_loads_with_stock_transformers(tmp_path):
    model = _model()
    parts = layer_parts(model)
    prune_ffn(model, parts, [ffn_magnitude(p) for p in parts], 12)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.intermediate_size == 12
    with torch.no_grad():
        assert torch.allclose(model(**_inputs()).logits, loaded(**_inputs()).logits, atol=1e-6)


def test_global_head_pruning_keeps_one_head_per_layer():
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([5.0, 6.0, 7.0, 8.0])]
    kept = heads_to_keep(scores, 0.5, "global")  # the four smallest are all in layer 0: one must stay
    assert [sorted(k.tolist()) for k in kept] == [[3], [1, 2, 3]]


def test_first_order_group_scores_sum_weight_times_gradient_inside_each_unit():
    model = _model()
    parts = layer_parts(model)
    inputs = _inputs()
    loss = model(**inputs).logits.pow(2).sum()
    scores = grouped_first_order(parts, "ffn", [loss])
    model.zero_grad()
    model(**inputs).logits.pow(2).sum().backward()
    part = parts[0]
    by_hand = (part.ffn_in.weight * part.ffn_in.weight.grad).sum(1) + (part.ffn_in.bias * part.ffn_in.bias.grad)
    by_hand = by_hand + (part.ffn_out.weight * part.ffn_out.weight.grad).sum(0)
    assert torch.allclose(scores[0], by_hand.abs().detach(), atol=1e-6)
