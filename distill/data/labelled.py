"""A text task's labelled splits from files, checked before anything is tokenised or trained.

:class:`TextFiles` says where the splits are and which columns hold what; :func:`load_text_data` reads
them (:mod:`distill.data.files`), works out the task (sequence classification, sentence pairs, or
token tagging with its tag scheme) and the label names, and checks everything a user can get wrong:
a missing column (the columns found are listed), an empty split, an empty text, a label of
validation/test that train never has (file and line), tags outside the scheme.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.data.files import DataError, Format, read_columns

Kind = Literal["sequence", "token", "multilabel"]
Scheme = Literal["BIO", "BIOES", "BMES"]
# The prefixes each tag scheme uses before "-<type>" (and "O" outside entities), in id order.
SCHEME_PREFIXES: dict[str, tuple[str, ...]] = {
    "BIO": ("B", "I"),
    "BIOES": ("B", "I", "E", "S"),
    "BMES": ("B", "M", "E", "S"),
}


@dataclass
class TextFiles:
    """Where a text task's splits are and how to read them (the recipe's ``data:`` block)."""

    format: Format
    train: str | Path
    validation: str | Path | None = None
    test: str | Path | None = None
    unlabeled: str | Path | None = None
    text: str | list[str] = "text"  # a column, or two for sentence pairs
    label: str = "label"
    tokens: str = "tokens"  # tagging from JSONL/CSV: the column of word lists ...
    tags: str = "tags"  # ... and the column of tag lists
    labels: list[str] | None = None  # the label names in id order (default: sorted, "O" first for tags)
    scheme: Scheme | None = None  # tagging: inferred from the tags when not given
    rename: dict[str, str] = field(default_factory=dict)  # old column name -> new, for every split
    label_separator: str | None = None  # multi-label from CSV/TSV: "sports|politics" (JSONL/Parquet: lists)
    split_names: dict[str, str] = field(default_factory=dict)  # e.g. {"validation": "dev"} for a preset


@dataclass
class TextSplit:
    """One split: ``inputs`` (texts, (text, text) pairs, or word lists) and ``labels`` (label ids, a list
    of tag ids per sentence, or for multi-label a 0/1 vector over the label names); ``lines`` is each
    example's line (row) in its file, for messages."""

    inputs: list
    labels: list
    lines: list[int]


@dataclass
class TextData:
    kind: Kind
    label_names: list[str]
    train: TextSplit
    evaluation: dict[str, TextSplit]  # the per-epoch split first (validation), then test
    score_split: str
    unlabeled: list | None = None
    scheme: Scheme | None = None
    files: dict[str, str] = field(default_factory=dict)


def load_text_data(files: TextFiles) -> TextData:
    """Read and check every split of ``files``; raises :class:`DataError` with one sentence on any problem."""
    columns = {role: _read(files, role) for role in ("train", "validation", "test", "unlabeled")}
    present = {role: table for role, table in columns.items() if table is not None}
    kind: Kind = "token" if files.format == "conll" or files.tokens in present["train"][1] else "sequence"
    reader = _TokenReader(files) if kind == "token" else _SequenceReader(files)
    raw = {role: reader.examples(path, table) for role, (path, table) in present.items() if role != "unlabeled"}
    if kind == "sequence" and reader.multi_label:  # type: ignore[union-attr]
        kind = "multilabel"
    names = reader.label_names(raw["train"][2], files.labels)
    splits = {role: reader.encode(names, *examples) for role, examples in raw.items()}
    evaluation = {files.split_names.get(role, role): splits[role] for role in ("validation", "test") if role in splits}
    unlabeled = None
    if "unlabeled" in present:
        path, table = present["unlabeled"]
        unlabeled = reader.inputs(path, table)
    return TextData(
        kind=kind,
        label_names=names,
        train=splits["train"],
        evaluation=evaluation,
        score_split=files.split_names.get("test", "test") if "test" in splits else next(iter(evaluation), ""),
        unlabeled=unlabeled,
        scheme=getattr(reader, "scheme", None),
        files={role: str(path) for role, (path, _) in present.items()},
    )


def _read(files: TextFiles, role: str) -> tuple[Path, dict[str, list]] | None:
    path = getattr(files, role)
    if path is None:
        return None
    columns = read_columns(path, _format_of(Path(path), files.format), files.rename)
    if not columns or not len(next(iter(columns.values()))):
        raise DataError(f"{path}: the {role} split is empty; it needs at least one example")
    return Path(path), columns


SUFFIX_FORMATS: dict[str, Format] = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}


def _format_of(path: Path, default: Format) -> Format:
    """A file's format by its suffix (an unlabeled JSONL beside CSV splits), else ``data.format``."""
    return SUFFIX_FORMATS.get(path.suffix.lower(), default) if default != "conll" else default


def _line_of(path: Path, row: int) -> int:
    """The file line of data row ``row`` (0-based): CSV/TSV have a header line; JSONL does not."""
    return row + (2 if path.suffix.lower() in (".csv", ".tsv", ".txt") else 1)


def _column(path: Path, table: dict[str, list], name: str, what: str) -> list:
    if name not in table:
        raise DataError(f"{path}: no column {name!r} for the {what}; the columns are {', '.join(map(repr, table))}")
    return table[name]


class _SequenceReader:
    """Sequence classification (one text column) or sentence pairs (two)."""

    def __init__(self, files: TextFiles) -> None:
        self.files = files
        self.text_columns = [files.text] if isinstance(files.text, str) else list(files.text)
        if not 1 <= len(self.text_columns) <= 2:
            raise DataError(f"data.text names one column or two (a sentence pair), got {self.text_columns}")

    def inputs(self, path: Path, table: dict[str, list]) -> list:
        texts = [_column(path, table, name, "text") for name in self.text_columns]
        for column, name in zip(texts, self.text_columns, strict=True):
            for row, value in enumerate(column):
                if not isinstance(value, str) or not value.strip():
                    raise DataError(f"{path}:{_line_of(path, row)}: column {name!r} has no text ({value!r})")
        return texts[0] if len(texts) == 1 else list(zip(*texts, strict=True))

    multi_label = False  # set by the training split: lists of labels (or data.label_separator) per example

    def examples(self, path: Path, table: dict[str, list]) -> tuple[Path, list, list]:
        labels = _column(path, table, self.files.label, "label")
        separator = self.files.label_separator
        if separator is not None:
            labels = [[part.strip() for part in str(value).split(separator) if part.strip()] for value in labels]
        is_list = [isinstance(value, list) for value in labels]
        if any(is_list) and not all(is_list):
            row = is_list.index(not is_list[0])
            raise DataError(
                f"{path}:{_line_of(path, row)}: label {labels[row]!r} is {'a list' if is_list[row] else 'one name'} "
                f"but row 1 has {'a list' if is_list[0] else 'one name'}; multi-label data give a list on every row"
            )
        if path == Path(self.files.train):
            self.multi_label = all(is_list)
        elif all(is_list) != self.multi_label:
            raise DataError(f"{path}: labels are {'lists' if all(is_list) else 'single names'}, unlike the train file")
        return path, self.inputs(path, table), labels

    def label_names(self, train_labels: Sequence[Any], given: list[str] | None) -> list[str]:
        if given:
            return list(given)
        values = {name for row in train_labels for name in row} if self.multi_label else set(train_labels)
        if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            return [str(value) for value in sorted(values)]
        return sorted(str(value) for value in values)

    def encode(self, names: list[str], path: Path, inputs: list, labels: list) -> TextSplit:
        lines = [_line_of(path, row) for row in range(len(labels))]
        if self.multi_label:  # each row: a 0/1 vector over the names (an empty list: none of them)
            rows = [set(self._ids(names, path, row, names_of_row)) for row, names_of_row in enumerate(labels)]
            return TextSplit(inputs, [[1.0 if i in ids else 0.0 for i in range(len(names))] for ids in rows], lines)
        return TextSplit(inputs, self._ids(names, path, None, labels), lines)

    def _ids(self, names: list[str], path: Path, row_of_list: int | None, labels: list) -> list[int]:
        """Label ids of ``labels``: one per row, or (``row_of_list`` given) the labels of that one row."""
        ids = {name: position for position, name in enumerate(names)}
        encoded = []
        numbered = bool(self.files.labels)  # integer labels index the given names (0 = the first)
        for position, label in enumerate(labels):
            row = position if row_of_list is None else row_of_list
            if numbered and isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
                encoded.append(label)
                continue
            if str(label) not in ids:
                known = ", ".join(names[:20])
                raise DataError(
                    f"{path}:{_line_of(path, row)}: label {label!r} is not a label of the training data ({known})"
                )
            encoded.append(ids[str(label)])
        return encoded


class _TokenReader:
    """Token tagging: a list of words and a list of tags per sentence (CoNLL columns, or JSONL lists)."""

    def __init__(self, files: TextFiles) -> None:
        self.files = files
        self.scheme: Scheme | None = files.scheme

    def inputs(self, path: Path, table: dict[str, list]) -> list:
        sentences = _column(path, table, self.files.tokens, "words")
        for row, words in enumerate(sentences):
            if not isinstance(words, list) or not words or not all(isinstance(word, str) for word in words):
                raise DataError(f"{path}:{_line_of(path, row)}: expected a non-empty list of words, got {words!r}")
        return sentences

    def examples(self, path: Path, table: dict[str, list]) -> tuple[Path, list, list]:
        sentences = self.inputs(path, table)
        tags = _column(path, table, self.files.tags, "tags")
        for row, (words, row_tags) in enumerate(zip(sentences, tags, strict=True)):
            if not isinstance(row_tags, list) or len(row_tags) != len(words):
                count = len(row_tags) if isinstance(row_tags, list) else row_tags
                raise DataError(f"{path}: sentence {row + 1} has {len(words)} words but tags {count!r}")
        return path, sentences, tags

    def label_names(self, train_tags: Sequence[list[str]], given: list[str] | None) -> list[str]:
        seen = {tag for row in train_tags for tag in row}
        self.scheme = self.scheme or _infer_scheme(seen)
        prefixes = SCHEME_PREFIXES[self.scheme]
        for tag in sorted(seen):
            prefix, _, kind = tag.partition("-")
            if tag != "O" and (prefix not in prefixes or not kind):
                raise DataError(
                    f"{self.files.train}: tag {tag!r} is not 'O' or one of {'/'.join(prefixes)}-<type> "
                    f"(scheme {self.scheme}; set data.scheme if the tags use another)"
                )
        if given:
            return list(given)
        types = sorted({tag.partition("-")[2] for tag in seen if tag != "O"})
        return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in prefixes)]

    def encode(self, names: list[str], path: Path, inputs: list, tags: list) -> TextSplit:
        ids = {name: position for position, name in enumerate(names)}
        encoded = []
        for row, row_tags in enumerate(tags):
            unknown = next((tag for tag in row_tags if tag not in ids), None)
            if unknown is not None:
                raise DataError(
                    f"{path}: sentence {row + 1} has tag {unknown!r}, which the training data never uses "
                    f"(tags: {', '.join(names)})"
                )
            encoded.append([ids[tag] for tag in row_tags])
        return TextSplit(inputs, encoded, list(range(1, len(tags) + 1)))


def _infer_scheme(tags: set[str]) -> Scheme:
    prefixes = {tag.partition("-")[0] for tag in tags if tag != "O"}
    if "M" in prefixes:
        return "BMES"
    if prefixes & {"E", "S"}:
        return "BIOES"
    return "BIO"
