"""Compression steps (the recipe's ``compress:`` list), one file each, found by registry: prune,
distill (recovery), quantize, export. See :mod:`distill.compress.base` for how a step is written."""

from distill.compress import cluster, export_step, lottery, lowrank, prune, quantize, recover, vocab  # noqa: F401
from distill.compress.base import AnyCompressStep, CompressState, CompressStep, register_step, step_class, step_names
from distill.compress.pipeline import run_compress

__all__ = [
    "AnyCompressStep",
    "CompressState",
    "CompressStep",
    "register_step",
    "run_compress",
    "step_class",
    "step_names",
]
