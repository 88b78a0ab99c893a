"""The random number generators' states (torch CPU and CUDA, numpy, Python) as tensors + JSON, for
checkpoints, and a context that leaves them untouched by whatever runs inside it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def capture_rng_states() -> tuple[dict[str, torch.Tensor], dict]:
    """torch (CPU and CUDA), numpy and Python RNG states, as tensors + JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = cuda_state
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    version, python_state, gauss_next = random.getstate()
    meta = {
        "numpy": {
            "kind": kind,
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": cached_gauss,
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }
    return tensors, meta


def restore_rng_states(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_states = [tensors[key] for key in sorted(tensors) if key.startswith("torch_cuda_")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    numpy_meta = meta["numpy"]
    np.random.set_state(
        (
            numpy_meta["kind"],
            tensors["numpy_keys"].numpy().astype(np.uint32),
            numpy_meta["pos"],
            numpy_meta["has_gauss"],
            numpy_meta["cached_gaussian"],
        )
    )
    python_meta = meta["python"]
    random.setstate((python_meta["version"], tuple(python_meta["state"]), python_meta["gauss_next"]))


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Run the block, then put every generator back where it was: evaluation, latency probes and reports
    draw random numbers (a DataLoader draws its base seed from the global generator), and training must
    not depend on whether, or on how much, they ran."""
    tensors, meta = capture_rng_states()
    try:
        yield
    finally:
        restore_rng_states(tensors, meta)
