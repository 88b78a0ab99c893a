"""Post-training int8 quantisation (``- {quantize: {mode: int8_dynamic}}``).

The backend is ONNX Runtime: the model is exported to ONNX (fp32) and its weights quantised to int8
by ``onnxruntime.quantization``; the served artefact is the int8 ONNX file. The fastest backend on a
BERT-base shape on 2 CPU cores (``python -m benchmarks.int8_backends``): ONNX Runtime int8 dynamic 2.9x
faster than eager fp32 PyTorch (3.1x faster than ONNX Runtime fp32), against 2.1x for
``torch.ao.quantization.quantize_dynamic`` (deprecated in torch 2.13), 1.5x for torchao int8 in eager
mode and 2.4x for torchao under ``torch.compile``; see docs/compression.md.

``int8_dynamic``: weights int8, activations quantised on the fly per batch (Linear/MatMul, Gather).
``int8_static``: activations too, with ranges calibrated on ``calibration_batches`` training batches
(QDQ format, MinMax calibration). The parity of the int8 artefact against the float model is checked by
argmax agreement only (``min_agreement``); int8 logits are not expected to match to 1e-3.

``reduce_range`` (default true) quantises weights to 7 bits ([-64, 64]). ONNX Runtime multiplies uint8
activations by int8 weights with pairwise int16 sums on x86 CPUs without VNNI (AVX2, as this
machine's), which saturate when both are near full range: on an MLP trained on digits the int8
model's largest logit error was 2.84 with full-range weights against 0.13 with ``reduce_range``
(``python -m benchmarks.int8_range``). ONNX Runtime's documentation recommends the same for these
CPUs; on VNNI CPUs ``reduce_range: false`` keeps one more bit.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.onnx_model import OnnxModel, export_onnx, held_out_inputs, parity
from distill.compress.recover import training_batches
from distill.core.batch import model_inputs
from distill.train.atomic import atomic_path


class _Calibration:
    """ONNX Runtime's CalibrationDataReader over training batches (numpy feeds of the graph's inputs)."""

    def __init__(self, batches: list[Any], names: list[str]) -> None:
        self._feeds = iter([_feeds(batch, names) for batch in batches])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)


def _feeds(inputs: Any, names: list[str]) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return {name: inputs[name].numpy() for name in names if name in inputs}
    return {names[0]: inputs.numpy()}


def calibration_batches(state: CompressState, count: int) -> list[Any]:
    """The model's own inputs of the first ``count`` training batches of 32."""
    return [
        model_inputs(state.model, batch.inputs) if isinstance(batch.inputs, Mapping) else batch.inputs
        for batch in training_batches(state, 32, count)
    ]


@register_step("quantize")
class Quantize(CompressStep):
    kind: Literal["quantize"] = "quantize"
    mode: Literal["int8_dynamic", "int8_static"] = "int8_dynamic"
    per_channel: bool = True  # one scale per output channel of each weight: less error than one per tensor
    reduce_range: bool = True  # 7-bit weights: ONNX Runtime's u8 x s8 kernels saturate on x86 without VNNI
    calibration_batches: int = Field(8, ge=1)  # int8_static: training batches of 32 the ranges come from
    min_agreement: float = Field(0.95, ge=0, le=1)  # argmax agreement with the float model on held-out inputs

    def label(self) -> str:
        return f"{self.mode.replace('_', ' ')} (ONNX Runtime)"

    def apply(self, state: CompressState, index: int) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

        model = state.require_torch(self.kind)
        folder = state.step_folder(index, self.kind)
        float_path = export_onnx(model, state.task.sample_inputs(), folder / "model-fp32.onnx")
        target = folder / "model.onnx"
        quiet = logging.getLogger()
        level, quiet.level = quiet.level, logging.ERROR  # "please consider pre-processing" on every call
        try:
            with atomic_path(target) as staging, contextlib.redirect_stdout(io.StringIO()):
                if self.mode == "int8_dynamic":
                    quantize_dynamic(
                        str(float_path),
                        str(staging),
                        weight_type=QuantType.QInt8,
                        per_channel=self.per_channel,
                        reduce_range=self.reduce_range,
                    )
                else:
                    names = OnnxModel(float_path).input_names
                    reader = _Calibration(calibration_batches(state, self.calibration_batches), names)
                    quantize_static(
                        str(float_path),
                        str(staging),
                        reader,
                        per_channel=self.per_channel,
                        reduce_range=self.reduce_range,
                    )
        finally:
            quiet.level = level
            float_path.unlink(missing_ok=True)
        served = OnnxModel(target, "ONNX int8")
        batches = held_out_inputs(state.task)
        state.details = {"parity": parity(model, served, batches, None, self.min_agreement, "the int8 model")}
        state.artefact, state.weights = served, target
