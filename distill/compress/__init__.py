"""Compression steps (the recipe's ``compress:`` list), one file each, found by registry: prune,
distill (recovery), lottery, snip, rigl, low_rank, cluster, share_layers, trim_vocab, qat, quantize, export. See
:mod:`distill.compress.base` for how a step is written."""

from distill.compress import (  # noqa: F401
    cluster,
    export_step,
    lottery,
    lowrank,
    prune,
    qat,
    quantize,
    recover,
    rigl,
    share,
    snip,
    vocab,
)
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
