"""Export (``- {export: {format: onnx}}``): the current model as the file a deployment serves, checked
against the PyTorch model on held-out inputs (max |logit difference| and argmax agreement, refused
beyond the tolerance).

``onnx``: one ONNX file (the int8 file when a quantize step came before; else the float model exported
with dynamic batch and sequence axes) plus, for text, the tokenizer and ``config.json`` with the label
names, so ``distill predict`` serves the folder with ONNX Runtime alone. ``hf``: a Hugging Face folder
that stock ``transformers`` loads (pruned weights stored dense; FFN pruning keeps a uniform width, head
pruning cannot be expressed in a config and is refused: use onnx). ``safetensors``: the weights, pruned
tensors stored as bitmask + values (:mod:`distill.compress.sparse_io`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from distill.compress.base import CompressState, CompressStep, register_step
from distill.compress.onnx_model import OnnxModel, export_onnx, held_out_inputs, parity
from distill.compress.share import unshared_copy
from distill.compress.sparse_io import load_compressed, save_compressed


@register_step("export")
class Export(CompressStep):
    kind: Literal["export"] = "export"
    format: Literal["onnx", "hf", "safetensors"] = "onnx"
    max_abs: float = Field(1e-3, gt=0)  # float artefacts: the largest |logit difference| allowed
    min_agreement: float = Field(0.99, ge=0, le=1)  # argmax agreement needed (int8: the quantize step's)

    def label(self) -> str:
        return f"export {self.format}"

    def apply(self, state: CompressState, index: int) -> None:
        folder = state.step_folder(index, self.kind)
        if self.format == "safetensors":
            model = state.require_torch(f"export {self.format}")
            target = folder / "model.safetensors"
            save_compressed(model.state_dict(), target)
            restored = load_compressed(target)
            if any(not restored[name].equal(value.cpu()) for name, value in model.state_dict().items()):
                raise RuntimeError(f"{target} does not read back as the model's weights")
            state.weights = target
            return
        if self.format == "hf":
            self._hf(state, folder)
            return
        target = folder / "model.onnx"
        reference = state.model
        if state.artefact is not None:  # quantised before: serve that file; int8 logits match by argmax only
            shutil.copyfile(state.artefact.path, target)
            served = OnnxModel(target, state.artefact.what)
            report = parity(reference, served, held_out_inputs(state.task), None, 0.0, "the exported model")
        else:
            export_onnx(reference, state.task.sample_inputs(), target)
            served = OnnxModel(target)
            report = parity(reference, served, held_out_inputs(state.task), self.max_abs, self.min_agreement)
        write_serving_files(state, folder)
        state.details = {"parity": report}
        state.artefact, state.weights = served, target

    def _hf(self, state: CompressState, folder: Path) -> None:

        from distill.compress.structured import layer_parts
        from distill.models.hf.loading import head_class, quiet_loading

        model = state.require_torch("export hf")
        config = getattr(model, "config", None)
        if config is None or not hasattr(model, "save_pretrained"):
            raise ValueError("compress export hf: the model is not a Hugging Face transformer; use format onnx")
        if state.custom_layers:
            raise ValueError(
                "compress export hf: a low-rank step replaced layers with factorised ones, which stock transformers "
                "cannot build from a config; use format onnx"
            )
        heads = {part.heads for part in layer_parts(model)}
        if heads != {getattr(config, "num_attention_heads", getattr(config, "n_heads", None))}:
            raise ValueError(
                f"compress export hf: attention heads were pruned ({sorted(heads)} per layer), which a transformers "
                "config cannot express (it derives the head size from the head count); use format onnx"
            )
        unshared_copy(model).save_pretrained(folder)  # stock transformers has no shared layers: each one written
        write_serving_files(state, folder)
        with quiet_loading():
            loaded = head_class(state.task.describe()["head"]).from_pretrained(folder).eval()
        batches = held_out_inputs(state.task)
        state.details = {"parity": parity(model, loaded, batches, self.max_abs, self.min_agreement, str(folder))}
        state.weights = folder / "model.safetensors"


def write_serving_files(state: CompressState, folder) -> None:
    """Tokenizer and a config with the label names beside a text model's ONNX file."""
    task = state.task
    config = getattr(state.model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(folder)
    tokenizer = getattr(task, "info", {}).get("tokenizer")
    if tokenizer is not None:
        import transformers

        transformers.AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)
