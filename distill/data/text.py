"""Tokenised text datasets: sequence classification (sentences or pairs) and token tagging.

Texts are tokenised once, when a dataset is built, and kept unpadded as lists of ints; a batch is
padded only to its own longest example (``make_collate``), and ``LengthGroupedSampler`` puts
examples of similar length together so that little of each batch is padding. Items and batches are
dicts with ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer makes them)
and ``labels``, which ``distill.core.batch.as_batch`` turns into a ``Batch`` for a Hugging Face model.

Only torch and a Hugging Face *fast* tokenizer are needed (tagging uses its ``word_ids``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from distill.core.batch import ALIGNMENT_KEY
from distill.names import unknown_name_message

IGNORE_INDEX = -100  # the label PyTorch's cross-entropy skips: special tokens, continuation pieces, padding
ENCODED_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def _lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file without ``\\n``/``\\r\\n`` (not ``splitlines``, which also splits on U+2028)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def conll_label_names(data_dir: str | Path) -> list[str]:
    """Tag names, id order: ``O`` then ``B-T``, ``I-T`` for each type ``T`` in the order of labels.txt.

    The shared labels.txt (``O, ORG, PER, LOC, MISC``) gives ``O, B-ORG, I-ORG, B-PER, I-PER, B-LOC,
    I-LOC, B-MISC, I-MISC``. Following the file keeps ids stable for everyone who reads it.
    """
    path = Path(data_dir) / "labels.txt"
    if not path.is_file():
        raise FileNotFoundError(f"CoNLL label list not found: {path} is missing")
    names = [line.strip() for line in _lines(path) if line.strip()]
    if not names or names[0] != "O":
        raise ValueError(f"{path}: the first line must be 'O', got {names[:1]}")
    return ["O", *(f"{prefix}-{kind}" for kind in names[1:] for prefix in ("B", "I"))]


def _encoded_columns(encoding: Mapping[str, Any]) -> dict[str, list[list[int]]]:
    """The model inputs a tokenizer returned (``token_type_ids`` only when it makes them)."""
    return {key: encoding[key] for key in ENCODED_KEYS if key in encoding}


def _check_same_length(first: Sequence, second: Sequence, what: str) -> None:
    if len(first) != len(second):
        raise ValueError(f"{what}: {len(first)} inputs but {len(second)} labels; they must pair up one to one")


class _EncodedDataset(Dataset):
    """Tokenised examples kept as lists of ints (``columns``) with their ``labels``; items are LongTensors."""

    columns: dict[str, list[list[int]]]
    labels: list
    label_dtype: torch.dtype = torch.long

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> list[int]:
        """Token counts, for ``LengthGroupedSampler``."""
        return [len(ids) for ids in self.columns["input_ids"]]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = {key: torch.tensor(values[index], dtype=torch.long) for key, values in self.columns.items()}
        item["labels"] = torch.tensor(self.labels[index], dtype=self.label_dtype)
        return item


class TextClassificationDataset(_EncodedDataset):
    """Sentences (or ``(first, second)`` sentence pairs, encoded as the tokenizer joins a pair) with one
    integer label each, or (``multi_label``) a 0/1 float vector over the classes, tokenised once
    (truncated to ``max_length``, unpadded)."""

    def __init__(
        self,
        texts: Sequence[Any],
        labels: Sequence[Any],
        tokenizer: Any,
        max_length: int = 128,
        multi_label: bool = False,
    ):
        _check_same_length(texts, labels, "TextClassificationDataset")
        if texts and isinstance(texts[0], tuple):
            first, second = (list(column) for column in zip(*texts, strict=True))
            encoding = tokenizer(first, second, truncation=True, max_length=max_length)
        else:
            encoding = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.columns = _encoded_columns(encoding)
        if multi_label:
            self.labels, self.label_dtype = [[float(v) for v in row] for row in labels], torch.float
        else:
            self.labels = [int(label) for label in labels]


class TokenTaggingDataset(_EncodedDataset):
    """Pre-split sentences with one tag per word, tokenised into word pieces with aligned labels.

    The first piece of each word carries the word's tag id; continuation pieces and special tokens
    carry -100, so the loss and the metrics see one decision per word. Truncation keeps the labels
    of the pieces that remain; ``word_counts[i]`` is how many words kept their first piece and
    ``gold_tags[i]`` the full original tags, so scoring can be done on whole sentences (words lost
    to truncation count as predicted ``O``; see ``distill.tasks.ner_metrics.extend_with_o``).
    """

    def __init__(
        self,
        sentences: Sequence[Sequence[str]],
        tags: Sequence[Sequence[str]],
        tokenizer: Any,
        label_names: Sequence[str],
        max_length: int = 128,
    ):
        _check_same_length(sentences, tags, "TokenTaggingDataset")
        self.label_names = list(label_names)
        label_ids = {name: position for position, name in enumerate(self.label_names)}
        tag_ids = [
            self._tag_ids(index, words, row, label_ids)
            for index, (words, row) in enumerate(zip(sentences, tags, strict=True))
        ]
        words = _with_unknown_for_empty(sentences, tokenizer)
        encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        self.columns = _encoded_columns(encoding)
        self.labels: list[list[int]] = []
        self.word_counts: list[int] = []
        self.word_ids = [_word_ids(encoding, index) for index in range(len(tag_ids))]
        for words_of_pieces, ids in zip(self.word_ids, tag_ids, strict=True):
            labels, count = _align(words_of_pieces, ids)
            self.labels.append(labels)
            self.word_counts.append(count)
        self.gold_tags = [list(row) for row in tags]

    @staticmethod
    def _tag_ids(index: int, words: Sequence[str], row: Sequence[str], label_ids: Mapping[str, int]) -> list[int]:
        if len(words) != len(row):
            raise ValueError(f"sentence {index}: {len(words)} words but {len(row)} tags")
        for tag in row:
            if tag not in label_ids:
                raise ValueError(f"sentence {index}: " + unknown_name_message("tag", tag, list(label_ids)))
        return [label_ids[tag] for tag in row]


def _with_unknown_for_empty(sentences: Sequence[Sequence[str]], tokenizer: Any) -> list[list[str]]:
    """The sentences with each word that tokenises to no piece (a control or zero-width character)
    replaced by the unknown token, so every word has a first piece and word-level predictions stay
    aligned with the gold tags. Each distinct word is tokenised once."""
    vocabulary = sorted({word for words in sentences for word in words})
    if not vocabulary:
        return [list(words) for words in sentences]
    pieces = tokenizer(vocabulary, add_special_tokens=False)["input_ids"]
    empty = {word for word, ids in zip(vocabulary, pieces, strict=True) if not ids}
    return [[tokenizer.unk_token if word in empty else word for word in words] for words in sentences]


def _word_ids(encoding: Any, index: int) -> list[int | None]:
    try:
        return encoding.word_ids(index)
    except (ValueError, AttributeError) as error:
        raise TypeError("TokenTaggingDataset needs a fast (Rust) tokenizer, which reports word_ids") from error


def _align(word_ids: Sequence[int | None], tag_ids: Sequence[int]) -> tuple[list[int], int]:
    """Piece labels (the word's tag on its first piece, -100 elsewhere) and the number of words labelled."""
    labels: list[int] = []
    previous: int | None = None
    count = 0
    for word in word_ids:
        if word is None or word == previous:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(tag_ids[word])
            count += 1
        previous = word
    return labels, count


def _pad(rows: Sequence[Tensor], value: int) -> Tensor:
    width = max(len(row) for row in rows)
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)  # float: multi-label vectors
    for position, row in enumerate(rows):
        out[position, : len(row)] = row
    return out


def with_teacher_encoding(dataset: _EncodedDataset, teacher: _EncodedDataset) -> _EncodedDataset:
    """``dataset`` (the student's encoding) also carrying ``teacher``'s encoding of the same texts under
    ``teacher_``-prefixed keys, for a teacher with another tokenizer."""
    if len(dataset) != len(teacher):
        raise ValueError(f"the two encodings differ in length: {len(dataset)} and {len(teacher)} examples")
    dataset.columns.update({f"teacher_{key}": values for key, values in teacher.columns.items()})
    return dataset


def with_teacher_tagging(dataset: TokenTaggingDataset, teacher: TokenTaggingDataset) -> TokenTaggingDataset:
    """``dataset`` carrying ``teacher``'s encoding (see :func:`with_teacher_encoding`) and, under
    ``teacher_positions``, the teacher position that each student piece reads its logits from (see
    :func:`teacher_positions`): tagging KD across two tokenizers compares word with word."""
    with_teacher_encoding(dataset, teacher)
    dataset.columns[ALIGNMENT_KEY] = [
        teacher_positions(student, own) for student, own in zip(dataset.word_ids, teacher.word_ids, strict=True)
    ]
    return dataset


def teacher_positions(student_words: Sequence[int | None], teacher_words: Sequence[int | None]) -> list[int]:
    """For each student piece (given as the word it belongs to, None for a special token), the position
    of the teacher piece whose logits it is compared with: the first teacher piece of the same word,
    so every piece of a word learns the teacher's distribution for that word (the word's first piece
    is the one scored). Special tokens before the first word read the teacher's first position
    ([CLS]), later ones, and words the teacher's truncation dropped, its last ([SEP])."""
    first: dict[int, int] = {}
    for position, word in enumerate(teacher_words):
        if word is not None:
            first.setdefault(word, position)
    last = max(len(teacher_words) - 1, 0)
    positions, seen_word = [], False
    for word in student_words:
        if word is None:
            positions.append(last if seen_word else 0)
        else:
            seen_word = True
            positions.append(first.get(word, last))
    return positions


def make_collate(
    pad_token_id: int, teacher_pad_token_id: int | None = None
) -> Callable[[Sequence[Mapping[str, Tensor]]], dict[str, Tensor]]:
    """A DataLoader ``collate_fn`` that pads each batch only to its own longest example.

    ``input_ids`` are padded with ``pad_token_id`` (the tokenizer's; ``teacher_input_ids``, a teacher's
    own encoding, with ``teacher_pad_token_id``), ``labels`` of tagging with -100 (ignored by the loss),
    every other 1-D field (``attention_mask``, ``token_type_ids``) with 0; 0-d fields (classification
    ``labels``, an ``index``) are stacked.
    """
    pads = {"input_ids": pad_token_id, "labels": IGNORE_INDEX, "teacher_input_ids": teacher_pad_token_id}

    def collate(examples: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        keys = list(examples[0])
        for position, example in enumerate(examples):
            if list(example) != keys:
                raise ValueError(f"example {position} has keys {list(example)}, example 0 has {keys}")
        batch: dict[str, Tensor] = {}
        for key in keys:
            values = [example[key] for example in examples]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
            else:
                batch[key] = _pad(values, pads.get(key) or 0)
        return batch

    return collate


class LengthGroupedSampler(Sampler[int]):
    """Random batches of similar-length examples, so dynamic padding wastes little compute.

    Each epoch: shuffle all indices (a ``torch.Generator`` seeded with ``seed + epoch``), cut the
    permutation into chunks of ``batch_size * 50``, sort each chunk by length (longest first), cut
    the chunks into batches and shuffle the order of the batches. Every index comes exactly once;
    the only short batch (when ``batch_size`` does not divide the dataset) is kept last, so a
    DataLoader with the same ``batch_size`` cuts exactly these batches.

    The epoch is what ``set_epoch`` last set, and it advances by one after each pass, so iterating
    twice gives two different orders that a new sampler with the same seed reproduces.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, chunk_batches: int = 50):
        if batch_size < 1 or chunk_batches < 1:
            raise ValueError(f"batch_size and chunk_batches must be >= 1, got {batch_size} and {chunk_batches}")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.chunk_size = batch_size * chunk_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` for the next pass (as with ``DistributedSampler``)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def batches(self) -> list[list[int]]:
        """The batches of the current epoch, without advancing it."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        batches: list[list[int]] = []
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)].tolist()
            batches.extend(chunk[at : at + self.batch_size] for at in range(0, len(chunk), self.batch_size))
        short = batches.pop() if batches and len(batches[-1]) < self.batch_size else None
        batches = [batches[position] for position in torch.randperm(len(batches), generator=generator).tolist()]
        return [*batches, short] if short else batches

    def __iter__(self) -> Iterator[int]:
        batches = self.batches()
        self.epoch += 1
        return iter([index for batch in batches for index in batch])


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The share of padded positions when each batch is padded to its longest example (0 = none)."""
    total = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches if batch)
    used = sum(lengths[i] for batch in batches for i in batch)
    return 1.0 - used / total if total else 0.0
