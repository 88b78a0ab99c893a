"""Vocabulary trimming (``- trim_vocab``): keep the word pieces the training texts use, so the embedding
matrix (in a 3-layer MiniLM student 11.7M of its 17.2M parameters) shrinks to the task's vocabulary.

Kept: every piece that occurs at least ``min_count`` times in the student's training texts (labelled and
``data.unlabeled``, plus the file ``texts`` if given; never the evaluation splits), the special tokens
and, with ``keep_characters``, every
single character and ``##character``, so a word unseen in training is spelled out in pieces rather than
mapped to [UNK]. Ids are renumbered in their old order. The trimmed tokenizer is a real WordPiece
tokenizer (saved with the model): on every training text it gives the old pieces, renumbered, because
greedy longest-match picks the same kept piece; elsewhere it falls back to shorter kept pieces. The task
is re-tokenised with it for the steps that follow, and the model before the step (a recovery teacher)
keeps reading the old encoding. WordPiece tokenizers only (BERT, MiniLM, DistilBERT, ELECTRA).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from distill.compress.base import CompressState, CompressStep, register_step
from distill.core.batch import reads_teacher_encoding


def kept_ids(tokenizer: Any, counts: Counter, min_count: int, keep_characters: bool) -> list[int]:
    """The ids kept, ascending: used often enough, special, or (``keep_characters``) one character long."""
    vocab = tokenizer.get_vocab()
    keep = {i for i, count in counts.items() if count >= min_count}
    keep |= set(tokenizer.all_special_ids)
    if keep_characters:
        keep |= {i for piece, i in vocab.items() if len(piece.removeprefix("##")) == 1}
    return sorted(keep)


def trimmed_tokenizer(tokenizer: Any, ids: list[int]) -> Any:
    """A WordPiece tokenizer over the pieces ``ids`` (renumbered in order), with the same normalisation."""
    import transformers

    model = type(tokenizer.backend_tokenizer.model).__name__
    if model != "WordPiece":
        raise ValueError(
            f"compress trim_vocab: the tokenizer is {model}; trimming supports WordPiece tokenizers (BERT, MiniLM, "
            "DistilBERT, ELECTRA)"
        )
    pieces = tokenizer.convert_ids_to_tokens(ids)
    options = {k: tokenizer.init_kwargs[k] for k in ("do_lower_case", "strip_accents", "tokenize_chinese_chars")}
    special = {k: getattr(tokenizer, k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
    return transformers.BertTokenizerFast(
        vocab={piece: i for i, piece in enumerate(pieces)},
        model_max_length=tokenizer.model_max_length,
        **{k: v for k, v in options.items() if v is not None},
        **{k: v for k, v in special.items() if v is not None},
    )


@torch.no_grad()
def trim_embeddings(model: nn.Module, ids: list[int], pad_token_id: int | None) -> None:
    """Keep the rows ``ids`` of the input embedding matrix; ``config.vocab_size`` follows."""
    old = model.get_input_embeddings()
    new = nn.Embedding(len(ids), old.embedding_dim, padding_idx=pad_token_id)
    new.weight.copy_(old.weight[torch.tensor(ids)])
    model.set_input_embeddings(new)
    model.config.vocab_size = len(ids)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id


def piece_counts(task: Any) -> Counter:
    """How often each piece occurs in the task's training set (its own encoding, ``input_ids``)."""
    dataset = task.train.dataset
    return Counter(i for index in task.train.indices for i in dataset.columns["input_ids"][index])


@register_step("trim_vocab")
class TrimVocab(CompressStep):
    kind: Literal["trim_vocab"] = "trim_vocab"
    min_count: int = Field(1, ge=1)  # keep pieces used at least this often in the training texts
    keep_characters: bool = True  # single characters too: unseen words are spelled out, not [UNK]
    texts: str | None = None  # more texts whose pieces are kept (a text per line, or JSONL with "text")

    def label(self) -> str:
        return "trim vocabulary to the training texts"

    def apply(self, state: CompressState, index: int) -> None:
        import transformers

        from distill.compress.recover import recovery_task

        model = state.require_torch(self.kind)
        task = state.task
        if getattr(task, "retokenise", None) is None or "tokenizer" not in getattr(task, "info", {}):
            raise ValueError("compress trim_vocab: needs a text task (a tokenizer to trim)")
        if task.two_encodings:
            raise ValueError("compress trim_vocab: the student already has its own tokenizer; trim needs the teacher's")
        old = transformers.AutoTokenizer.from_pretrained(task.info["tokenizer"])
        counts = piece_counts(recovery_task(state))
        if self.texts is not None:
            from distill.data.files import read_inputs

            counts.update(i for row in old(read_inputs(self.texts))["input_ids"] for i in row)
        ids = kept_ids(old, counts, self.min_count, self.keep_characters)
        new = trimmed_tokenizer(old, ids)
        folder = state.step_folder(index, self.kind) / "tokenizer"
        new.save_pretrained(folder)
        state.keep_before()
        reads_teacher_encoding(state.before)  # the untrimmed model reads the old encoding, as the teacher does
        if state.teacher is not None:
            reads_teacher_encoding(state.teacher)
        trim_embeddings(model, ids, new.pad_token_id)
        state.task = task.retokenise(new, old)
        state.task.info = {**copy.copy(task.info), **state.task.info}
        state.task.info.update({"tokenizer": str(folder), "teacher_tokenizer": task.info["tokenizer"]})
