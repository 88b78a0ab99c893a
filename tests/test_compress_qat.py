"""Quantisation-aware training: the fake quantisers equal hand computations and ONNX Runtime's own ops,
gradients pass straight through, and the int8 model of QAT weights computes what training simulated."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from torch import nn

from distill.compress.onnx_model import export_onnx
from distill.compress.qat import (
    FakeQuantLinear,
    fake_quant_input,
    fake_quant_weight,
    finish_fake_quant,
    start_fake_quant,
)
from distill.run.recipe import RecipeError, validate_recipe
from distill.run.runner import run_recipe
from tests.test_compress import _recipe


def test_weights_round_to_a_symmetric_int8_grid_per_channel_or_per_tensor():
    weight = torch.tensor([[0.5, -1.0, 0.3], [2.0, 0.1, -0.35]])
    # row 0: s = 1/127, 63.5 -> 64 (half to even), -127, 38.1 -> 38; row 1: s = 2/127, 127, 6.35 -> 6, -22.225 -> -22
    expected = torch.tensor([[64 / 127, -1.0, 38 / 127], [2.0, 12 / 127, -44 / 127]])
    assert torch.allclose(fake_quant_weight(weight, per_channel=True), expected, atol=1e-7)
    # one scale 2/127: 31.75 -> 32, -63.5 -> -64, 19.05 -> 19, 127, 6.35 -> 6, -22.225 -> -22
    per_tensor = torch.tensor([[64, -128, 38], [254, 12, -44]]) / 127
    assert torch.allclose(fake_quant_weight(weight, per_channel=False), per_tensor, atol=1e-7)
    # reduce_range, 64 levels: row 0 s = 1/64: 32, -64, 19.2 -> 19; row 1 s = 2/64: 64, 3.2 -> 3, -11.2 -> -11
    reduced = torch.tensor([[32 / 64, -1.0, 19 / 64], [2.0, 6 / 64, -22 / 64]])
    assert torch.allclose(fake_quant_weight(weight, per_channel=True, levels=64), reduced, atol=1e-7)


def _onnx_runtime_dynamic_quantize(values: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear then DequantizeLinear, run by ONNX Runtime: the reference."""
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "dq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(values.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(values.shape))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": values})[0]


@pytest.mark.parametrize("shift", [-1.0, 0.0, 2.5])  # mostly negative, around zero, all positive
def test_inputs_quantise_as_onnx_runtime_dynamic_quantize_linear(shift):
    values = torch.randn(4, 9, generator=torch.Generator().manual_seed(0)) + shift
    reference = _onnx_runtime_dynamic_quantize(values.numpy())
    ours = fake_quant_input(values).numpy()
    assert np.abs(ours - reference).max() <= 1e-6
    assert len(np.unique(ours)) <= 256


def test_gradients_pass_straight_through_the_rounding():
    weight = torch.randn(3, 5, requires_grad=True)
    inputs = torch.randn(2, 5, requires_grad=True)
    upstream_w, upstream_x = torch.randn(3, 5), torch.randn(2, 5)
    (fake_quant_weight(weight) * upstream_w).sum().backward()
    (fake_quant_input(inputs) * upstream_x).sum().backward()
    assert torch.equal(weight.grad, upstream_w) and torch.equal(inputs.grad, upstream_x)


def test_the_int8_model_of_qat_weights_computes_what_training_simulated(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5)).eval()
    inputs = torch.randn(16, 12)
    assert start_fake_quant(model, per_channel=True, activations=True, levels=64) == ["0", "2"]
    assert isinstance(model[0], FakeQuantLinear) and "0.weight" in dict(model.named_parameters())
    simulated = model(inputs).detach()
    finish_fake_quant(model)
    assert type(model[0]) is nn.Linear
    for layer in (model[0], model[2]):  # every weight on its row's grid max|w| / 64
        steps = layer.weight / (layer.weight.abs().amax(1, keepdim=True) / 64)
        assert torch.allclose(steps, steps.round(), atol=1e-4)
    float_path = export_onnx(model, inputs, tmp_path / "fp32.onnx")
    int8 = str(tmp_path / "int8.onnx")  # as the quantize step does by default
    quantize_dynamic(str(float_path), int8, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    assert any(node.op_type == "MatMulInteger" for node in onnx.load(tmp_path / "int8.onnx").graph.node)
    session = onnxruntime.InferenceSession(str(tmp_path / "int8.onnx"), providers=["CPUExecutionProvider"])
    served = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
    assert np.abs(served - simulated.numpy()).max() < 1e-5 * np.abs(simulated.numpy()).max()
    plain = model(inputs).detach().numpy()  # without input rounding: further from the int8 model
    assert np.abs(served - plain).max() > 10 * np.abs(served - simulated.numpy()).max()


def test_a_recipe_trains_quantisation_aware_then_quantises(tmp_path):
    raw = _recipe([{"qat": {"epochs": 1, "teacher": "teacher"}}, "quantize"])
    results = run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    qat, int8 = results["rows"][-2:]
    assert qat["label"] == "quantisation-aware training 1 ep from the teacher"
    assert int8["details"]["parity"]["agreement"] >= 0.95
    assert abs(int8["score"]["mean"] - qat["score"]["mean"]) <= 0.02
    with pytest.raises(RecipeError, match="reduce_range True but the quantize step after it has reduce_range False"):
        validate_recipe(_recipe(["qat", {"quantize": {"reduce_range": False}}]))
    with pytest.raises(ValueError, match="after weight clustering rounding would break the clusters"):
        raw = _recipe([{"cluster": {"bits": 3}}, "qat"])
        run_recipe(validate_recipe(raw), raw, tmp_path / "run2", show_progress=False)
