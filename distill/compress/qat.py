"""Quantisation-aware training under distillation (``- {qat: {epochs: 1}}``, then ``- quantize``): the
student trains with its Linear and Conv layers computing as the int8 model will (fake quantisation,
Jacob et al. 2018), distilled from the float model before the step (``teacher: before``) or the run's
float teacher, so it learns weights that survive rounding. The following ``quantize: {mode:
int8_dynamic}`` step then gives ONNX Runtime's int8 model of those weights.

The fake quantisers are ONNX Runtime's own (``onnxruntime.quantization``, checked in the tests against
its ``DynamicQuantizeLinear`` op and its quantised weights):

- weights, symmetric int8 over [-L, L]: s = max|w| / L per output channel (``per_channel``) or per
  tensor, w_q = s · clamp(round(w / s), -L, L), with L = 64 (``reduce_range``, 7-bit weights) or 127.
  Both must be those of the quantize step that follows (checked when the recipe is read; the defaults
  agree). The quantize step's default is ``reduce_range: true`` because ONNX Runtime's uint8 x int8
  kernels saturate on x86 CPUs without VNNI, such as this machine's (see that step);
- inputs (``activations: true``), dynamic asymmetric uint8 per tensor, as ``DynamicQuantizeLinear``:
  the range [min(x, 0), max(x, 0)] of the current batch, s = range / 255, z = clamp(round(-min / s), 0,
  255), x_q = s · (clamp(round(x / s) + z, 0, 255) - z).

round() is half to even, as numpy's. Gradients pass through the rounding unchanged (the straight-
through estimator, Bengio et al. 2013); nothing is clamped by these ranges (they cover every value),
so the estimator is exact identity. At the end the weights are replaced by their quantised values
(already on ONNX Runtime's grid: the int8 step reproduces them) and the layers compute in float
again, so the table's row after ``qat`` is the weight-quantised model. Embedding tables and products
of two activations (attention scores) stay float during training; ONNX Runtime quantises only
weight MatMuls/Gemms/Convs (and Gather) of the exported graph.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.masks import is_skipped
from distill.compress.recover import recovery_teacher, train_recovery


def _through(value: Tensor, quantised: Tensor) -> Tensor:
    """``quantised`` forward, identity backward (the straight-through estimator)."""
    return value + (quantised - value).detach()


def fake_quant_weight(weight: Tensor, per_channel: bool = True, levels: int = 127) -> Tensor:
    """Symmetric int8 fake quantisation of ``weight`` (dim 0: output channels) onto [-levels, levels]:
    ONNX Runtime's QInt8 (``levels`` 64 with its ``reduce_range``)."""
    reduce = tuple(range(1, weight.dim())) if per_channel else tuple(range(weight.dim()))
    absmax = weight.detach().abs().amax(dim=reduce, keepdim=True)
    scale = torch.where(absmax > 0, absmax / levels, torch.ones_like(absmax))
    return _through(weight, torch.clamp(torch.round(weight / scale), -levels, levels) * scale)


def fake_quant_input(value: Tensor) -> Tensor:
    """Dynamic asymmetric uint8 fake quantisation over the whole tensor (``DynamicQuantizeLinear``)."""
    detached = value.detach()
    low, high = detached.min().clamp(max=0), detached.max().clamp(min=0)
    scale = (high - low) / 255
    if scale == 0:
        return value
    zero = torch.clamp(torch.round(-low / scale), 0, 255)
    quantised = (torch.clamp(torch.round(value / scale) + zero, 0, 255) - zero) * scale
    return _through(value, quantised)


class _FakeQuant:
    """Mixed into a layer's class while it trains quantisation-aware (its parameter names stay the
    same, so pruning masks, clusters and checkpoints see the usual ``weight``)."""

    qat_per_channel: bool = True
    qat_activations: bool = True
    qat_levels: int = 64

    def quantised_weight(self) -> Tensor:
        return fake_quant_weight(self.weight, self.qat_per_channel, self.qat_levels)

    def quantised_inputs(self, value: Tensor) -> Tensor:
        return fake_quant_input(value) if self.qat_activations else value


class FakeQuantLinear(_FakeQuant, nn.Linear):
    def forward(self, value: Tensor) -> Tensor:
        weight = self.quantised_weight()
        return functional.linear(self.quantised_inputs(value), weight, self.bias)


class FakeQuantConv1d(_FakeQuant, nn.Conv1d):
    def forward(self, value: Tensor) -> Tensor:
        weight = self.quantised_weight()
        return self._conv_forward(self.quantised_inputs(value), weight, self.bias)


class FakeQuantConv2d(_FakeQuant, nn.Conv2d):
    def forward(self, value: Tensor) -> Tensor:
        weight = self.quantised_weight()
        return self._conv_forward(self.quantised_inputs(value), weight, self.bias)


FAKE_QUANT = {nn.Linear: FakeQuantLinear, nn.Conv1d: FakeQuantConv1d, nn.Conv2d: FakeQuantConv2d}
FLOAT = {fake: plain for plain, fake in FAKE_QUANT.items()}


def start_fake_quant(
    model: nn.Module, per_channel: bool, activations: bool, levels: int = 64, skip: list[str] = ()
) -> list[str]:
    """Make every Linear/Conv1d/Conv2d of ``model`` (exactly those types, outside ``skip``) compute
    fake-quantised; the names of the layers changed."""
    changed = []
    for name, module in model.named_modules():
        fake = FAKE_QUANT.get(type(module))
        if fake is None or is_skipped(name, skip):
            continue
        module.__class__ = fake  # the same object and parameters, a forward that quantises
        module.qat_per_channel, module.qat_activations, module.qat_levels = per_channel, activations, levels
        changed.append(name)
    return changed


@torch.no_grad()
def finish_fake_quant(model: nn.Module) -> None:
    """Put the quantised weights in place and make the layers plain float layers again."""
    for module in model.modules():
        plain = FLOAT.get(type(module))
        if plain is None:
            continue
        module.weight.copy_(module.quantised_weight())
        module.__class__ = plain
        del module.qat_per_channel, module.qat_activations, module.qat_levels


@register_step("qat")
class QuantisationAware(CompressStep):
    kind: Literal["qat"] = "qat"
    epochs: int = Field(1, ge=1)
    lr: float | None = Field(None, gt=0)  # default: the student's train.optimizer.lr
    teacher: Literal["before", "teacher"] = "before"  # the float model before this step, or the run's teacher
    per_channel: bool = True  # as the quantize step: one weight scale per output channel
    reduce_range: bool = True  # as the quantize step: 7-bit weights, no saturation without VNNI
    activations: bool = True  # fake-quantise layer inputs as int8 dynamic does; false: weights only
    skip: list[str] = Field(default_factory=list)  # module names left float

    def label(self) -> str:
        source = "the model before" if self.teacher == "before" else "the teacher"
        return f"quantisation-aware training {self.epochs} ep from {source}"

    def check(self, recipe: Any) -> None:
        steps = list(recipe.compress)
        later = steps[next(i for i, step in enumerate(steps) if step is self) + 1 :]
        quantize = next((step for step in later if step.kind == "quantize"), None)
        if quantize is None:
            return
        for option in ("per_channel", "reduce_range"):
            if getattr(quantize, option) != getattr(self, option):
                raise ValueError(
                    f"compress qat: {option} {getattr(self, option)} but the quantize step after it has "
                    f"{option} {getattr(quantize, option)}; give both the same, so training simulates the int8 model"
                )

    def apply(self, state: CompressState, index: int) -> None:
        model = state.require_torch(self.kind)
        if state.clusters:
            raise ValueError("compress qat: after weight clustering rounding would break the clusters; put qat first")
        state.keep_before()
        teacher = recovery_teacher(state, self.teacher)
        levels = 64 if self.reduce_range else 127
        if not start_fake_quant(model, self.per_channel, self.activations, levels, self.skip):
            raise ValueError(f"compress qat: the model has no Linear or Conv layers outside skip {self.skip}")
        try:
            folder = state.step_folder(index, self.kind)
            train_recovery(state, teacher, folder, f"qat s{state.seed}", self.epochs, self.lr)
        finally:
            finish_fake_quant(model)
