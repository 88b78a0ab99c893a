"""Model builders: the 1-D CNN's shapes and module names, and ModelSpec validation."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from distill.models import MLPSpec, ModelContext, ModelSpec, SmallCNN, SmallCNN1d, build_model, model_spec


@pytest.mark.parametrize("batch_shape", [(5, 1, 40), (5, 40)])
def test_cnn1d_logits_for_channel_and_flat_inputs(batch_shape) -> None:
    model = SmallCNN1d((1, 40), [8, 16], num_classes=10)
    assert model(torch.randn(*batch_shape)).shape == (5, 10)


def test_cnn1d_from_a_flat_input_shape() -> None:
    model = SmallCNN1d((40,), [8], num_classes=3)
    assert model(torch.randn(2, 40)).shape == (2, 3)


def test_cnn1d_module_names_and_feature_shapes() -> None:
    model = SmallCNN1d((1, 40), [8, 16, 32], num_classes=10, convs_per_block=2)
    names = dict(model.named_modules())
    for name in ("block1", "block2.conv", "block2.bn", "block2.relu", "block2.conv2", "block2.pool", "flatten", "head"):
        assert name in names, name
    assert "block1.conv3" not in names
    assert isinstance(names["block2.conv2"], nn.Conv1d) and names["block2.conv2"].in_channels == 16
    assert isinstance(names["head"], nn.Linear) and names["head"].in_features == 32

    seen = {}
    hooks = [
        model.get_submodule(name).register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, out))
        for name in ("block1", "block2", "block3", "flatten")
    ]
    model(torch.randn(4, 40))
    for hook in hooks:
        hook.remove()
    # 40 -> 20 -> 10 -> 5 positions; flatten is the penultimate embedding.
    assert seen["block1"].shape == (4, 8, 20)
    assert seen["block2"].shape == (4, 16, 10)
    assert seen["block3"].shape == (4, 32, 5)
    assert seen["flatten"].shape == (4, 32)


def test_cnn1d_pool_blocks_limits_pooling() -> None:
    model = SmallCNN1d((1, 40), [8, 8, 8], num_classes=2, pool_blocks=1)
    assert hasattr(model.block1, "pool") and not hasattr(model.block2, "pool")
    assert model.block1.conv.bias is None  # the BatchNorm carries the shift


def test_cnn1d_rejects_image_shapes() -> None:
    with pytest.raises(ValueError, match="'cnn'"):
        SmallCNN1d((1, 28, 28), [8], num_classes=10)


def test_build_model_cnn1d() -> None:
    spec = model_spec("cnn1d", channels=[8, 16], convs_per_block=2)
    model = build_model(spec, ModelContext(10, input_shape=(1, 40)))
    assert isinstance(model, SmallCNN1d)
    assert hasattr(model.block1, "conv2") and model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_small_cnn_exposes_flatten_before_head() -> None:
    model = build_model(model_spec("cnn", channels=[4, 8]), ModelContext(10, input_shape=(1, 8, 8)))
    assert isinstance(model, SmallCNN)
    names = [name for name, _ in model.named_children()]
    assert names[-2:] == ["flatten", "head"]


def test_model_spec_rejects_unknown_keys_and_kinds() -> None:
    with pytest.raises(ValidationError, match="chanels"):
        ModelSpec.model_validate({"kind": "cnn1d", "chanels": [8]})
    with pytest.raises(ValidationError, match=r"unknown model kind 'cnn3d'.*did you mean 'cnn1d'"):
        ModelSpec.model_validate({"kind": "cnn3d"})
    with pytest.raises(ValidationError):
        model_spec("cnn1d", convs_per_block=0)


def test_a_field_of_another_kind_is_an_unknown_key() -> None:
    with pytest.raises(ValidationError, match="convs_per_block"):
        model_spec("cnn", convs_per_block=2)
    assert model_spec("cnn1d").convs_per_block == 1 and isinstance(ModelSpec.model_validate({}), MLPSpec)
