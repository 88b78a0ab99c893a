"""Capture: the one door through which losses see inside a model.

Forward hooks by dotted module name (:mod:`distill.capture.hooks`) and Hugging Face layer names
(``hidden:K``, ``attention:K``, ``scores:K``, ``values:K``, ``logits``; :mod:`distill.capture.hf_layers`)
behind :func:`open_capture`. Nothing here imports ``transformers``: models are recognised by structure.
"""

from distill.capture.hf_layers import LayerCapture, check_layer_name, is_layer_index_name, open_capture
from distill.capture.hf_structure import EncoderLayout, is_transformer, layout_of
from distill.capture.hooks import Capture, ModuleNotCalledError, UnknownModuleError, module_names, resolve_module

__all__ = [
    "Capture",
    "EncoderLayout",
    "LayerCapture",
    "ModuleNotCalledError",
    "UnknownModuleError",
    "check_layer_name",
    "is_layer_index_name",
    "is_transformer",
    "layout_of",
    "module_names",
    "open_capture",
    "resolve_module",
]
