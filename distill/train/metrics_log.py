"""``metrics.jsonl``: one JSON record per line (step and epoch events), appended as training goes.

A run killed mid-write leaves a partial last line: readers skip it (with a warning), and a resumed run
rewrites the file atomically without it and without the records after its checkpoint.
"""

from __future__ import annotations

import json
import statistics
import warnings
from pathlib import Path

from distill.train.atomic import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def read_records(path: Path) -> list[dict]:
    """Every whole record of a metrics file; lines that do not parse are skipped with one warning."""
    if not path.is_file():
        return []
    records, damaged = [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            damaged.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged.append(number)
    if damaged:
        warnings.warn(
            f"{path}: line(s) {', '.join(map(str, damaged))} are not whole JSON records (a run killed while "
            "writing); they are ignored",
            stacklevel=2,
        )
    return records


def append_record(path: Path, record: dict) -> None:
    with open(path, "a") as stream:
        stream.write(json.dumps(record) + "\n")


def truncate_after(path: Path, step: int) -> None:
    """Keep the records up to optimizer step ``step`` (a resumed checkpoint's): the later ones are about to be
    logged again. The file is replaced atomically; a partial last line goes too."""
    if not path.exists():
        return
    kept = [record for record in read_records(path) if record.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


def training_throughput(run_dir: Path) -> dict[str, float]:
    """``train_examples_per_second`` (and ``train_tokens_per_second`` for text, padding not counted) of a
    training run: the median over its epochs in ``metrics.jsonl``, all processes together; {} without one."""
    epochs = [record for record in read_records(Path(run_dir) / METRICS_FILE) if record.get("event") == "epoch"]
    found = {}
    for name in ("examples_per_second", "tokens_per_second"):
        values = [record[name] for record in epochs if name in record]
        if values:
            found[f"train_{name}"] = statistics.median(values)
    return found
