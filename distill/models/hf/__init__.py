"""Hugging Face models: teachers loaded offline with a task head, students shrunk from teachers."""

from distill.capture.hf_structure import layout_of
from distill.models.hf.loading import load_classifier, load_tokenizer, token_probe
from distill.models.hf.student import layer_pairs, map_layers, student_from_teacher

__all__ = [
    "layer_pairs",
    "layout_of",
    "load_classifier",
    "load_tokenizer",
    "map_layers",
    "student_from_teacher",
    "token_probe",
]
