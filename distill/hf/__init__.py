"""Hugging Face transformers support: layers by index, students shrunk from teachers, model loading."""

from distill.hf.layers import LayerCapture, check_layer_name, is_layer_index_name, open_capture
from distill.hf.structure import EncoderLayout, layout_of
from distill.hf.student import layer_pairs, map_layers, student_from_teacher

__all__ = [
    "EncoderLayout",
    "LayerCapture",
    "check_layer_name",
    "is_layer_index_name",
    "layer_pairs",
    "layout_of",
    "map_layers",
    "open_capture",
    "student_from_teacher",
]
