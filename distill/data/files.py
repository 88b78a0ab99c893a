"""Labelled text from a user's local files: CSV, TSV, JSON lines and Parquet through Hugging Face
``datasets`` (offline, no hand-written parsers), CoNLL column files for tagging.

Every problem with a file is a :class:`DataError`: one sentence naming the file (and the line or row
where there is one) and what would be right, raised before anything is trained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

Format = Literal["csv", "tsv", "jsonl", "parquet", "conll"]
FORMATS: tuple[str, ...] = ("csv", "tsv", "jsonl", "parquet", "conll")
# datasets' packaged builder and its options per format. TSV is unquoted (as GLUE writes it), and no
# cell is read as missing: a sentence "NA" stays text, an empty cell is caught as empty text.
_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "csv": ("csv", {"na_filter": False}),
    "tsv": ("csv", {"delimiter": "\t", "quoting": 3, "na_filter": False}),
    "jsonl": ("json", {}),
    "parquet": ("parquet", {}),
}


class DataError(ValueError):
    """A data file that cannot be used as it is; the message says which file, where, and what is expected."""


def read_columns(path: str | Path, format: Format, rename: Mapping[str, str] | None = None) -> dict[str, list]:
    """The columns of one split file as lists (``rename`` maps old column names to new ones)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if format not in FORMATS:
        raise DataError(f"{path}: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    columns = read_conll(path) if format == "conll" else _read_with_datasets(path, format)
    for old, new in (rename or {}).items():
        if old in columns:
            columns[new] = columns.pop(old)
    return columns


def _read_with_datasets(path: Path, format: str) -> dict[str, list]:
    import datasets

    builder, options = _BUILDERS[format]
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # datasets wraps the parser's error; its cause says what and where
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: the file is empty; it needs at least one example") from None
        raise DataError(f"{path}: not a valid {format} file: {_parser_message(error)}") from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    return {name: table[name] for name in table.column_names}


def _parser_message(error: BaseException) -> str:
    """The innermost parser message, with a 0-based JSON ``row N`` turned into a 1-based line."""
    while error.__cause__ is not None:
        error = error.__cause__
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"in row (\d+)$", lambda match: f"at line {int(match.group(1)) + 1}", message)


def read_conll(path: str | Path) -> dict[str, list]:
    """``tokens`` and ``tags`` of a CoNLL column file: one token per line with its tag in the last column
    (separated by spaces or tabs), a blank line between sentences, ``-DOCSTART-`` lines skipped."""
    path = Path(path)
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    words: list[str] = []
    sentence_tags: list[str] = []
    text = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate([*text, ""], start=1):
        fields = line.rstrip("\r").split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                tokens.append(words)
                tags.append(sentence_tags)
                words, sentence_tags = [], []
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{number}: expected a token and its tag (the last column), got {line[:80]!r}")
        words.append(fields[0])
        sentence_tags.append(fields[-1])
    return {"tokens": tokens, "tags": tags}


def read_inputs(path: str | Path) -> list[str]:
    """Texts from a ``.jsonl`` file (its ``text`` field) or from any other file, one per non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix.lower() != ".jsonl":
        return lines
    texts = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number}: expected an object with a "text" string')
        texts.append(record["text"])
    return texts
