"""train.gradient_checkpointing: the same gradients with less kept; a model with nothing to recompute refused."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distill.train.memory import enable_gradient_checkpointing
from tests.hf_models import tiny_bert, tiny_inputs


class Wrapped(nn.Module):  # a Hugging Face model inside distill's own module, as students are trained
    def __init__(self) -> None:
        super().__init__()
        self.model = tiny_bert(hidden_dropout_prob=0.1).train()

    def forward(self, inputs):
        return self.model(**inputs).logits


def _gradients(module: nn.Module) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)  # the same dropout draws in both runs
    module(tiny_inputs()).square().sum().backward()
    return {name: parameter.grad.clone() for name, parameter in module.named_parameters()}


def test_checkpointing_recomputes_layers_to_the_same_gradients():
    plain = Wrapped()
    checkpointed = copy.deepcopy(plain)
    assert enable_gradient_checkpointing(checkpointed) == ["model"]
    assert checkpointed.model.is_activation_checkpointing and not plain.model.is_activation_checkpointing
    expected, found = _gradients(plain), _gradients(checkpointed)
    for name, gradient in expected.items():
        torch.testing.assert_close(found[name], gradient, rtol=1e-5, atol=1e-7, msg=name)


def test_a_model_without_layers_to_recompute_is_refused_with_the_setting_named():
    with pytest.raises(ValueError, match=r"train.gradient_checkpointing needs a Hugging Face model .* Sequential"):
        enable_gradient_checkpointing(nn.Sequential(nn.Linear(2, 2)))
