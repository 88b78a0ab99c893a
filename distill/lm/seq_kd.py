"""Sequence-level knowledge distillation (Kim & Rush, EMNLP 2016, "Sequence-Level Knowledge Distillation").

The teacher completes every training prompt once (greedy, or beam search with ``generation.num_beams``, as
the paper's beam approximation of the teacher's mode), and the student is trained on those sequences
instead of the data: next-token cross-entropy on the teacher's completions, optionally plus a token-level
loss against the teacher on the same sequences (the paper's "Seq-KD + Word-KD").

The teacher's sequences are written once to ``<run>/teacher-sequences/`` (``sequences.safetensors`` and
``meta.json``, both atomic) and reused by later seeds and by ``--resume`` when they were made from the same
prompts, settings, teacher weights and tokenizer (a sha256 of all four).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.lm.cache import hash_model
from distill.lm.corpus import Blocks
from distill.lm.generation import GenerationSpec, generate
from distill.lm.sequences import prompts_of, with_completions
from distill.train.atomic import atomic_path, atomic_write_json, read_json

FOLDER = "teacher-sequences"


def _fingerprint(prompts: list[list[int]], settings: GenerationSpec, teacher: nn.Module, tokenizer: Any) -> str:
    """sha256 of the prompts, the generation settings, the teacher's weights and its tokenizer."""
    digest = hashlib.sha256(json.dumps([prompts, settings.model_dump()]).encode())
    hash_model(digest, teacher, tokenizer)
    return digest.hexdigest()


def training_prompts(dataset: Any, prompt_tokens: int) -> list[list[int]]:
    """The prompt of every example of a :class:`~distill.tasks.lm.BlockDataset`, in dataset order."""
    items = [dataset[position] for position in range(len(dataset))]
    stacked = {key: torch.stack([item[key] for item in items]) for key in ("input_ids", "labels", "attention_mask")}
    return prompts_of(stacked["input_ids"], stacked["labels"], stacked["attention_mask"], prompt_tokens)


def teacher_sequences(
    folder: Path, teacher: nn.Module, tokenizer: Any, prompts: list[list[int]], settings: GenerationSpec, batch: int = 8
) -> Blocks:
    """The teacher's completions of ``prompts`` as training sequences, generated once (see the module docstring)."""
    key = _fingerprint(prompts, settings, teacher, tokenizer)
    meta_path, tensors_path = folder / "meta.json", folder / "sequences.safetensors"
    if meta_path.is_file() and tensors_path.is_file() and read_json(meta_path).get("key") == key:
        stored = load_file(str(tensors_path))
        return Blocks(stored["input_ids"], stored["labels"], stored["attention_mask"])
    completions: list[list[int]] = []
    ended: list[bool] = []
    for start in range(0, len(prompts), batch):
        written = generate(teacher, prompts[start : start + batch], tokenizer, settings, seed=start)
        completions += written.completions
        ended += written.ended
    blocks = with_completions(prompts, completions, ended, tokenizer.pad_token_id, tokenizer.eos_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"input_ids": blocks.input_ids, "labels": blocks.labels, "attention_mask": blocks.attention_mask}
    with atomic_path(tensors_path) as temporary:
        save_file(tensors, str(temporary))
    atomic_write_json(meta_path, {"key": key, "sequences": len(prompts), "generation": settings.model_dump()})
    return blocks
