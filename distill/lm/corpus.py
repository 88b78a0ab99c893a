"""Language-model data: a text corpus packed into fixed-length blocks, or prompt/completion pairs where only
the completion is scored.

Both give examples of ``input_ids`` and ``labels`` (``-100`` where a token is not scored: prompt and
padding), the convention of ``transformers``' causal LMs; :func:`shifted_mask` turns the labels into the
mask of the *positions* whose next-token prediction is scored, which the token losses take.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

IGNORE = -100
KJV_SPLITS = ("train", "dev", "test")


def kjv_split_of_chapter(chapter_number: int) -> str:
    """The King James Bible corpus's split by chapter (../shared/data/kjv/README.md): chapter k of the 1,189,
    numbered in canonical order from 0, goes to test when k % 20 == 0, to dev when k % 20 == 10, else train."""
    if chapter_number % 20 == 0:
        return "test"
    return "dev" if chapter_number % 20 == 10 else "train"


def read_kjv(path: str | Path, split: str) -> list[str]:
    """The chapters of one split of ``kjv.jsonl`` as texts (a chapter's verses joined by spaces), in order."""
    if split not in KJV_SPLITS:
        raise ValueError(f"unknown KJV split {split!r}; use one of: {', '.join(KJV_SPLITS)}")
    chapters: list[list[str]] = []
    previous = None
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                verse = json.loads(line)
                key = (verse["book"], verse["chapter"])
                text = verse["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                problem = f"{path}, line {number}: not a KJV verse with book, chapter and text ({error})"
                raise ValueError(problem) from None
            if key != previous:
                chapters.append([])
                previous = key
            chapters[-1].append(text)
    return [" ".join(verses) for index, verses in enumerate(chapters) if kjv_split_of_chapter(index) == split]


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Texts of a corpus file: ``.txt`` (one document per non-empty line), ``.jsonl``/``.json``, ``.csv`` or
    ``.parquet`` with a ``column`` (read by Hugging Face ``datasets``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file {path} does not exist")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    table = _read_table(path)
    if column not in table.column_names:
        raise ValueError(f"{path}: no column {column!r}; the columns are: {', '.join(table.column_names)}")
    return [str(text) for text in table[column] if text is not None and str(text).strip()]


def _read_table(path: str | Path):
    """A JSONL/JSON, CSV or Parquet file as a ``datasets`` table."""
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(path.suffix)
    if kind is None:
        raise ValueError(f"{path}: unknown format {path.suffix!r}; use .txt (corpus only), .jsonl, .csv or .parquet")
    return load_dataset(kind, data_files=str(path), split="train")


@dataclass(frozen=True)
class Blocks:
    """Token blocks of equal length: ``input_ids`` and ``labels``, both ``(blocks, length)``, and the
    ``attention_mask`` (1 on real tokens, 0 on padding; all ones for a packed corpus)."""

    input_ids: Tensor
    labels: Tensor
    attention_mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.attention_mask is None:
            object.__setattr__(self, "attention_mask", torch.ones_like(self.input_ids))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def scored_tokens(self) -> int:
        return int((shifted_mask(self.labels)).sum())


def pack(token_lists: Iterable[Sequence[int]], block_size: int, separator: int | None) -> Blocks:
    """Documents joined end to end (``separator``, usually EOS, after each) and cut into blocks of
    ``block_size`` tokens; the incomplete last block is dropped. Every token is scored."""
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2 (a token and the next one to predict), got {block_size}")
    stream: list[int] = []
    for tokens in token_lists:
        stream.extend(tokens)
        if separator is not None:
            stream.append(separator)
    count = len(stream) // block_size
    if count == 0:
        raise ValueError(f"the corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    ids = torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)
    return Blocks(input_ids=ids, labels=ids.clone())


def pack_corpus(texts: Sequence[str], tokenizer, block_size: int) -> Blocks:
    """``texts`` tokenised (no special tokens added), joined with the tokenizer's EOS, packed into blocks."""
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return pack(encoded, block_size, tokenizer.eos_token_id)


def encode_pairs(
    prompts: Sequence[str], completions: Sequence[str], tokenizer, max_length: int, chat: bool | None = None
) -> Blocks:
    """Prompt/completion pairs, right-padded to the longest (at most ``max_length``): only completion tokens
    are scored (labels ``-100`` on prompt and padding).

    ``chat``: wrap the prompt in the tokenizer's chat template as a user turn (instruct models); by
    default when the tokenizer has one. The completion ends with EOS so that the model learns to stop.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions: they go in pairs")
    use_chat = bool(getattr(tokenizer, "chat_template", None)) if chat is None else chat
    rows: list[tuple[list[int], list[int]]] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        prompt_ids = prompt_tokens(prompt, tokenizer, use_chat)
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt_ids + completion_ids)[:max_length]
        labels = ([IGNORE] * len(prompt_ids) + completion_ids)[:max_length]
        rows.append((ids, labels))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return right_padded(rows, pad)


def right_padded(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> Blocks:
    """``(token ids, labels)`` rows right-padded to the longest: ``pad_id`` ids, -100 labels, mask 0."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, scored) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(list(ids))
        labels[row, : len(scored)] = torch.tensor(list(scored))
        attention_mask[row, : len(ids)] = 1
    return Blocks(input_ids=input_ids, labels=labels, attention_mask=attention_mask)


def read_pairs(path: str | Path, prompt: str = "prompt", completion: str = "completion") -> tuple[list[str], list[str]]:
    """Prompt/completion pairs of a ``.jsonl``/``.json``, ``.csv`` or ``.parquet`` file (two columns)."""
    table = _read_table(path)
    missing = [column for column in (prompt, completion) if column not in table.column_names]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r}; the columns are: {', '.join(table.column_names)}")
    prompts, completions = [], []
    for number, (question, answer) in enumerate(zip(table[prompt], table[completion], strict=True), start=1):
        if question is None or answer is None or not str(answer).strip():
            raise ValueError(f"{path}, row {number}: an empty prompt or completion; every pair needs both")
        prompts.append(str(question))
        completions.append(str(answer))
    return prompts, completions


def prompt_tokens(prompt: str, tokenizer, chat: bool) -> list[int]:
    """The tokens a completion follows: the chat template's user turn and assistant header, or the bare prompt."""
    if chat:
        messages = [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def shifted_mask(labels: Tensor) -> Tensor:
    """``(B, L)`` bool: position t is scored when token t+1 is (its logits predict that token); the last is not."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def next_token_targets(labels: Tensor) -> Tensor:
    """``(B, L)``: at position t the token t+1 to predict, ``-100`` where it is not scored and at the end."""
    targets = torch.full_like(labels, IGNORE)
    targets[:, :-1] = labels[:, 1:]
    return targets
