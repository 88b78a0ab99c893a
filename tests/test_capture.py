"""Capture: records match hand-computed layer values, hooks never outlive the context."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.capture import Capture, ModuleNotCalledError, UnknownModuleError, module_names, resolve_module


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.block = nn.Sequential(nn.ReLU(), nn.Linear(6, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


class Shared(nn.Module):
    """Applies the same layer twice: weight sharing, as in recurrent or tied models."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.tanh(self.layer(x)))


class TupleOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x * 3


def _hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_module_names_are_dotted_and_exclude_root() -> None:
    assert module_names(Nested()) == ["stem", "block", "block.0", "block.1", "head"]
    model = Nested()
    assert resolve_module(model, "block.1") is model.block[1]


def test_records_outputs_match_manual_computation() -> None:
    model, x = Nested(), torch.randn(2, 4)
    with Capture(model, ["stem", "block.1", "head"]) as cap:
        out = model(x)
    stem = model.stem(x)
    hidden = model.block[1](torch.relu(stem))
    torch.testing.assert_close(cap["stem"], stem)
    torch.testing.assert_close(cap["block.1"], hidden)
    torch.testing.assert_close(cap["head"], out)
    assert set(cap.records) == {"stem", "block.1", "head"}


def test_records_inputs() -> None:
    model, x = Nested(), torch.randn(2, 4)
    with Capture(model, ["stem", "head"], what="input") as cap:
        model(x)
    torch.testing.assert_close(cap["stem"], x)
    torch.testing.assert_close(cap["head"], model.block(model.stem(x)))


def test_input_passed_by_keyword_is_recorded() -> None:
    model, x = nn.Sequential(nn.Linear(2, 2)), torch.randn(1, 2)
    with Capture(model, ["0"], what="input") as cap:
        model[0](input=x)
    torch.testing.assert_close(cap["0"], x)


def test_tuple_output_records_element_zero() -> None:
    model = nn.Sequential(TupleOut())
    x = torch.randn(2, 3)
    with Capture(model, ["0"]) as cap:
        model(x)
    torch.testing.assert_close(cap["0"], x * 2)


def test_hooks_removed_after_exit_and_after_exception() -> None:
    model = Nested()
    with Capture(model, ["stem", "block.0"]):
        assert _hooks(model) == 2
        model(torch.randn(1, 4))
    assert _hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"), Capture(model, ["stem", "head"]):
        assert _hooks(model) == 2
        raise RuntimeError("boom")
    assert all(not m._forward_hooks for m in model.modules())


def test_attach_and_remove_without_with() -> None:
    model, x = Nested(), torch.randn(2, 4)
    cap = Capture(model, ["stem"]).attach()
    assert cap.attached
    with pytest.raises(RuntimeError, match="already attached"):
        cap.attach()
    model(x)
    cap.remove()
    cap.remove()  # idempotent
    assert _hooks(model) == 0 and not cap.attached
    torch.testing.assert_close(cap["stem"], model.stem(x))


def test_module_called_twice_is_recorded_per_call() -> None:
    model, x = Shared(), torch.randn(2, 3)
    with Capture(model, ["layer"]) as cap:
        out = model(x)
    first = model.layer(x)
    torch.testing.assert_close(cap["layer"], first)
    torch.testing.assert_close(cap["layer#1"], out)
    assert list(cap.records) == ["layer", "layer#1"]
    with pytest.raises(ModuleNotCalledError, match="called 2 time"):
        cap["layer#2"]


def test_clear_empties_records_for_the_next_batch() -> None:
    model = Nested()
    with Capture(model, ["stem"]) as cap:
        model(torch.randn(2, 4))
        cap.clear()
        assert cap.records == {}
        x = torch.randn(3, 4)
        model(x)
        assert list(cap.records) == ["stem"]  # not "stem#1": the call count was reset too
    torch.testing.assert_close(cap["stem"], model.stem(x))


def test_unknown_name_lists_valid_names_and_closest_match() -> None:
    model = Nested()
    with pytest.raises(UnknownModuleError) as info:
        Capture(model, ["stem", "blok.1"])
    message = str(info.value)
    assert "unknown module 'blok.1'" in message
    for name in ("stem", "block", "block.0", "block.1", "head"):
        assert name in message
    assert "did you mean 'block.1'?" in message
    assert not message.startswith('"')  # readable, not KeyError's repr
    assert _hooks(model) == 0  # validated before any hook was registered


def test_unknown_name_in_a_large_model_lists_every_name() -> None:
    model = nn.Sequential(*[nn.Sequential(nn.Linear(2, 2), nn.ReLU()) for _ in range(30)])
    with pytest.raises(UnknownModuleError) as info:
        resolve_module(model, "29.00")
    message = str(info.value)
    assert all(name in message for name in module_names(model))
    assert "did you mean" in message
    assert max(len(line) for line in message.splitlines()) <= 100


def test_not_called_and_not_captured_errors() -> None:
    model = Nested()
    with Capture(model, ["stem", "head"]) as cap:
        model.stem(torch.randn(1, 4))
    with pytest.raises(KeyError) as info:
        cap["head"]
    assert str(info.value) == "module 'head' was not called during the forward pass"
    with pytest.raises(UnknownModuleError, match="did you mean 'stem'"):
        cap["stm"]


def test_gradients_flow_unless_detached() -> None:
    model, x = Nested(), torch.randn(2, 4)
    with Capture(model, ["block.1"]) as cap:
        model(x)
    cap["block.1"].pow(2).sum().backward()
    assert model.stem.weight.grad is not None and model.stem.weight.grad.abs().sum() > 0

    model.zero_grad(set_to_none=True)
    with Capture(model, ["block.1"], detach=True) as cap:
        model(x)
    assert not cap["block.1"].requires_grad
    assert cap["block.1"].grad_fn is None
