"""Text tasks from files: a user's CSV/TSV/JSONL/Parquet/CoNLL files, or a built-in preset over the
same readers (``sst2``, ``conll2003`` in ../shared/data).

:func:`text_task_from` tokenises checked :class:`~distill.data.labelled.TextData` once into a
:class:`~distill.tasks.text.TextTask`; :func:`load_text_task_for` does it for a recipe's ``data:``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from distill.data.labelled import TextData, TextFiles, TextSplit, load_text_data
from distill.data.text import (
    TextClassificationDataset,
    TokenTaggingDataset,
    conll_label_names,
    make_collate,
    with_teacher_encoding,
    with_teacher_tagging,
)
from distill.tasks.text import Indexed, TextTask, multilabel_metric, tagging_metric


def _sst2(folder: Path) -> TextFiles:
    # train.tsv names its text column "sentence", dev.tsv "content" (see ../shared/data/sst2/README.md)
    return TextFiles(
        "tsv",
        folder / "train.tsv",
        validation=folder / "dev.tsv",
        text="sentence",
        rename={"content": "sentence"},
        labels=["negative", "positive"],
        split_names={"validation": "dev"},
    )


def _conll2003(folder: Path) -> TextFiles:
    return TextFiles(
        "conll",
        folder / "train.txt",
        validation=folder / "dev.txt",
        test=folder / "test.txt",
        labels=conll_label_names(folder),  # the id order of labels.txt
        scheme="BIO",
        split_names={"validation": "dev"},
    )


PRESETS: dict[str, Callable[[Path], TextFiles]] = {"sst2": _sst2, "conll2003": _conll2003}


def default_data_dir(preset: str) -> Path:
    """``../shared/data/<preset>`` relative to the working directory, else to the project checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base.parent / "shared" / "data" / preset
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no data folder for {preset!r}: pass data_dir (e.g. ../shared/data/{preset})")


def preset_files(name: str, data_dir: str | Path | None = None) -> TextFiles:
    if name not in PRESETS:
        raise ValueError(f"unknown text preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name](Path(data_dir) if data_dir is not None else default_data_dir(name))


def seeded_subset(count: int, subset: int | None, seed: int) -> list[int]:
    """``subset`` of ``range(count)`` drawn with ``seed``, in order (all of it when ``subset`` is None)."""
    if subset is None or subset >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(count, generator=generator)[:subset].tolist())


def _held_out(data: TextData, val_size: int, seed: int) -> TextData:
    """``val_size`` seeded training examples become the validation split (no validation file given)."""
    if val_size >= len(data.train.inputs):
        raise ValueError(f"data.val_size is {val_size} but train has only {len(data.train.inputs)} examples")
    held = set(seeded_subset(len(data.train.inputs), val_size, seed))
    keep = [i for i in range(len(data.train.inputs)) if i not in held]
    evaluation = {"validation": _take(data.train, sorted(held)), **data.evaluation}
    return TextData(**{**data.__dict__, "train": _take(data.train, keep), "evaluation": evaluation})


def _take(split: TextSplit, rows: list[int]) -> TextSplit:
    return TextSplit([split.inputs[i] for i in rows], [split.labels[i] for i in rows], [split.lines[i] for i in rows])


def _with_eval_subset(data: TextData, count: int, seed: int) -> TextData:
    """``count`` seeded examples of each evaluation split, for quick runs."""
    evaluation = {
        name: _take(split, seeded_subset(len(split.inputs), count, seed)) for name, split in data.evaluation.items()
    }
    return TextData(**{**data.__dict__, "evaluation": evaluation})


def text_task_from(
    data: TextData,
    tokenizer: Any,
    name: str = "files",
    train_subset: int | None = None,
    subset_seed: int = 0,
    max_length: int = 128,
    teacher_tokenizer: Any = None,
) -> TextTask:
    """Tokenise ``data``; ``train_subset`` keeps a seeded random subset of the training set (picked before
    tokenising: only the subset is encoded). ``teacher_tokenizer`` (a teacher that tokenises otherwise than
    the student's ``tokenizer``) adds its encoding of every text under ``teacher_`` keys."""
    if not data.evaluation:
        raise ValueError("data: no split to evaluate on; give data.validation, data.test or data.val_size")
    total = len(data.train.inputs)
    chosen = seeded_subset(total, train_subset, subset_seed)
    train = _take(data.train, chosen)
    extra = list(data.unlabeled or [])  # tokenised with train; labels never read (hidden by with_unlabeled)
    dummy = {
        "sequence": lambda: [0] * len(extra),
        "multilabel": lambda: [[0.0] * len(data.label_names)] * len(extra),
        "token": lambda: [[0] * len(words) for words in extra],
    }[data.kind]()
    splits = {"train": TextSplit(train.inputs + extra, train.labels + dummy, []), **data.evaluation}
    if data.kind != "token":
        multi = data.kind == "multilabel"

        def encode(split: TextSplit, encoder: Any) -> TextClassificationDataset:
            return TextClassificationDataset(split.inputs, split.labels, encoder, max_length, multi_label=multi)

        built = {s: encode(split, tokenizer) for s, split in splits.items()}
        if teacher_tokenizer is not None:
            for s, split in splits.items():
                built[s] = with_teacher_encoding(built[s], encode(split, teacher_tokenizer))
        metric = multilabel_metric if multi else None
    else:
        names = data.label_names

        def tag(split: TextSplit, encoder: Any) -> TokenTaggingDataset:
            tags = [[names[i] for i in row] for row in split.labels]
            return TokenTaggingDataset(split.inputs, tags, encoder, names, max_length)

        built = {s: tag(split, tokenizer) for s, split in splits.items()}
        if teacher_tokenizer is not None:  # the teacher's logits come back word by word in student positions
            for s, split in splits.items():
                built[s] = with_teacher_tagging(built[s], tag(split, teacher_tokenizer))
        metric = tagging_metric(names, data.scheme or "BIO")
    return TextTask(
        name=name,
        kind=data.kind,
        train=Indexed(built.pop("train"), list(range(len(chosen)))),
        unlabeled=list(range(len(chosen), len(chosen) + len(extra))),
        evaluation={s: Indexed(dataset) for s, dataset in built.items()},
        label_names=data.label_names,
        collate=make_collate(tokenizer.pad_token_id, getattr(teacher_tokenizer, "pad_token_id", None)),
        metric=metric,
        # the latency probe's random ids must be valid for every model's vocabulary
        vocab_size=min(len(tokenizer), len(teacher_tokenizer)) if teacher_tokenizer is not None else len(tokenizer),
        two_encodings=teacher_tokenizer is not None,
        # the same examples encoded by other tokenizers (compress: trim_vocab writes a smaller one)
        retokenise=lambda student, teacher: text_task_from(
            data, student, name, train_subset, subset_seed, max_length, teacher
        ),
        score_split=data.score_split if data.score_split in built else next(iter(built)),
        info={
            "files": data.files,
            "train_examples": len(chosen),
            "train_total": total,
            "train_indices": chosen,  # the examples trained on, as positions in the train file
            "source_indices": chosen,  # the same for every example tokenised (with_train picks among them)
            "scheme": data.scheme,
        },
    )


def load_text_task(
    name: str,
    tokenizer: Any,
    data_dir: str | Path | None = None,
    train_subset: int | None = None,
    subset_seed: int = 0,
    max_length: int = 128,
) -> TextTask:
    """A preset's task (``sst2``, ``conll2003``) read from ``data_dir`` (default ../shared/data/<name>)."""
    data = load_text_data(preset_files(name, data_dir))
    return text_task_from(data, tokenizer, name, train_subset, subset_seed, max_length)


def tokenizer_source(recipe: Any) -> Any:
    """The first Hugging Face model spec of the recipe (teacher, ensemble members, student): its tokenizer
    encodes the data for every model of the run."""
    ensemble = recipe.teacher.ensemble
    candidates = [recipe.teacher.model, *(ensemble.models if ensemble else []), recipe.student.model]
    spec = next((candidate for candidate in candidates if hasattr(candidate, "path")), None)
    if spec is None:
        raise ValueError(f"dataset {recipe.data.dataset!r} is text: teacher.model needs kind hf (a transformer)")
    return spec


def own_student_folder(recipe: Any) -> Any:
    """The student's spec when it is a Hugging Face folder of its own (no ``layers``: not shrunk from the
    teacher), which brings its own tokenizer; else None."""
    student = recipe.student.model
    return student if hasattr(student, "path") and student.layers is None else None


def _encoders(recipe: Any) -> tuple[Any, Any, Any]:
    """(tokenizer of the data, the teacher's when it tokenises otherwise, the spec whose tokenizer is saved
    with an export). A student folder with its own tokenizer encodes the data; the teacher then reads its
    own encoding of the same texts."""
    from distill.models.hf.loading import load_tokenizer, same_tokenizer

    source = tokenizer_source(recipe)
    tokenizer = load_tokenizer(source.path, source.trust_remote_code)
    student = own_student_folder(recipe)
    if student is None or student is source:
        return tokenizer, None, source
    own = load_tokenizer(student.path, student.trust_remote_code)
    if same_tokenizer(own, tokenizer):
        return tokenizer, None, source
    if recipe.teacher.ensemble is not None or recipe.student.chain:
        what = "an ensemble teacher" if recipe.teacher.ensemble is not None else "student.chain (assistants)"
        raise ValueError(
            f"student.model.path {student.path!r} tokenises otherwise than the teacher; {what} is not supported "
            "with two tokenizers: use one teacher, or a student with the teacher's tokenizer"
        )
    return own, tokenizer, student


def load_text_task_for(recipe: Any, data_dir: str | None = None) -> TextTask:
    """The recipe's text task (a preset, or ``data.train`` and friends), tokenised with its first
    transformer's tokenizer, or with the student's own when it differs (the teacher's encoding rides
    along); the data are read and checked before the tokenizers are loaded."""
    from distill.models.hf.loading import resolve_model_path

    spec = recipe.data
    if spec.dataset == "files":
        files = spec.text_files()
    else:  # a preset's own files, plus the recipe's unlabeled texts (read with the preset's columns)
        files = dataclasses.replace(preset_files(spec.dataset, data_dir or spec.data_dir), unlabeled=spec.unlabeled)
    data = load_text_data(files)
    if spec.val_size and "validation" not in data.files:
        data = _held_out(data, spec.val_size, spec.split_seed)
    tokenizer, teacher_tokenizer, model = _encoders(recipe)
    if spec.eval_subset:
        data = _with_eval_subset(data, spec.eval_subset, spec.split_seed)
    task = text_task_from(
        data, tokenizer, spec.dataset, spec.train_subset, spec.split_seed, spec.max_length, teacher_tokenizer
    )
    task.info["tokenizer"] = str(Path(resolve_model_path(model.path)).resolve())  # saved with an export
    if teacher_tokenizer is not None:  # the teacher's own, saved when the teacher row is exported
        task.info["teacher_tokenizer"] = str(Path(resolve_model_path(tokenizer_source(recipe).path)).resolve())
    return task
