"""Predictions of an exported folder (``distill export``, or a ``compress:`` ONNX export, which runs with
ONNX Runtime alone) as JSON lines, with label names.

Sequence classification gives ``{"text", "label", "probabilities": {name: p}}`` per input (multi-label:
``{"text", "labels": [every name with p > 0.5], "probabilities"}``, a sigmoid per class); token
classification gives ``{"text", "tokens", "tags"}`` (one tag per whitespace-separated word: the tag
of its first word piece).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distill.models.hf.loading import folder_head, head_class, quiet_loading

ONNX_FILE = "model.onnx"  # an ONNX export (compress: export) serves with ONNX Runtime, without torch


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _logits_of(folder: Path, head: str) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """The folder's model as a function from a NumPy encoding to NumPy logits: ONNX Runtime when the folder
    holds ``model.onnx``, else the Hugging Face weights in PyTorch."""
    if (folder / ONNX_FILE).is_file():
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
        names = [node.name for node in session.get_inputs()]
        return lambda encoded: session.run(None, {name: encoded[name] for name in names if name in encoded})[0]
    import torch

    with quiet_loading():
        model = head_class(head).from_pretrained(folder).eval()

    def run(encoded: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return model(**{key: torch.from_numpy(value) for key, value in encoded.items()}).logits.numpy()

    return run


def predict(folder: str | Path, texts: Sequence[str], batch_size: int = 32) -> Iterator[dict[str, Any]]:
    """One prediction per text from the model and tokenizer in ``folder``."""
    import transformers

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json: pass a folder written by `distill export`")
    config = transformers.AutoConfig.from_pretrained(folder)
    head = folder_head(config)
    logits_of = _logits_of(folder, head)
    with quiet_loading():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    names = [config.id2label[i] for i in range(config.num_labels)]
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        if head == "token":
            yield from _tag(logits_of, tokenizer, batch, names)
            continue
        encoded = tokenizer(batch, padding=True, truncation=True, return_tensors="np")
        multi = head == "multilabel"
        logits = logits_of(dict(encoded))
        probabilities = 1 / (1 + np.exp(-logits)) if multi else _softmax(logits)  # a sigmoid per class: multi-label
        for text, row in zip(batch, probabilities, strict=True):
            chosen = {"labels": [n for n, p in zip(names, row, strict=True) if p > 0.5]} if multi else {}
            yield {
                "text": text,
                **(chosen or {"label": names[int(row.argmax())]}),
                "probabilities": {name: round(float(p), 6) for name, p in zip(names, row, strict=True)},
            }


def _tag(logits_of: Callable, tokenizer: Any, texts: list[str], names: list[str]) -> Iterator[dict[str, Any]]:
    words = [text.split() for text in texts]
    encoded = tokenizer(words, is_split_into_words=True, padding=True, truncation=True, return_tensors="np")
    best = logits_of(dict(encoded)).argmax(-1)
    for index, (text, row) in enumerate(zip(texts, words, strict=True)):
        tags: dict[int, str] = {}
        for position, word in enumerate(encoded.word_ids(index)):
            if word is not None and word not in tags:
                tags[word] = names[int(best[index, position])]
        yield {"text": text, "tokens": row, "tags": [tags.get(i, "O") for i in range(len(row))]}
