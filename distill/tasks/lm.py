"""Causal language modelling as a task: a corpus packed into blocks, or prompt/completion pairs.

Two datasets: ``kjv`` (the King James Bible of ../shared/data/kjv, split by chapter as its README says) and
``lm`` (your own files: ``data.train`` and optional ``data.validation`` / ``data.test``, ``.txt`` with one
document per line, or JSONL/CSV/Parquet with a ``data.text`` column; with ``data.prompt`` set, pairs of
``data.prompt`` and ``data.completion`` columns where only the completion is scored). Texts are tokenised
with the teacher's tokenizer (``teacher.model.path``) and packed into blocks of ``data.max_length`` tokens.

Examples are ``input_ids``, ``attention_mask`` and as ``labels`` the next-token targets (``-100`` where a
token is not scored), so the Trainer's evaluation loss is the mean next-token negative log-likelihood
(its exponential the perplexity) and its accuracy the next-token top-1 accuracy, the headline ``score``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from distill.core.evaluation import evaluate
from distill.core.method import BuildContext
from distill.lm.corpus import Blocks, encode_pairs, next_token_targets, pack_corpus, read_kjv, read_pairs, read_texts
from distill.lm.generation import GenerationSpec
from distill.models.registry import ModelContext
from distill.tasks.text_files import default_data_dir, seeded_subset

if TYPE_CHECKING:
    from distill.train.settings import TrainSettings

EVAL_BATCH = 8  # blocks per evaluation batch: logits are batch x length x vocabulary floats


class BlockDataset(Dataset):
    """Blocks as the Trainer's examples: ``input_ids``, ``attention_mask``, next-token ``labels``, ``index``; with
    ``teacher_blocks`` (a teacher with another tokenizer: the same texts, row by row, in its tokens) also the
    ``teacher_``-prefixed three, which only a model marked as the teacher reads."""

    def __init__(
        self, blocks: Blocks, indices: Sequence[int] | None = None, teacher_blocks: Blocks | None = None
    ) -> None:
        self.blocks, self.teacher_blocks = blocks, teacher_blocks
        self.indices = list(range(len(blocks))) if indices is None else list(indices)
        self.targets = next_token_targets(blocks.labels)
        self.teacher_targets = None if teacher_blocks is None else next_token_targets(teacher_blocks.labels)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        row = self.indices[position]
        item = {
            "input_ids": self.blocks.input_ids[row],
            "attention_mask": self.blocks.attention_mask[row],  # type: ignore[index]
            "labels": self.targets[row],
            "index": torch.tensor(position),  # where the top-k cache of this dataset keeps the teacher's outputs
        }
        if self.teacher_blocks is not None:
            item["teacher_input_ids"] = self.teacher_blocks.input_ids[row]
            item["teacher_attention_mask"] = self.teacher_blocks.attention_mask[row]  # type: ignore[index]
            item["teacher_labels"] = self.teacher_targets[row]  # type: ignore[index]
        return item

    def for_teacher(self) -> BlockDataset:
        """The teacher's encoding of the same examples under the plain keys (itself with one tokenizer)."""
        return self if self.teacher_blocks is None else BlockDataset(self.teacher_blocks, self.indices)

    def subset(self, indices: Sequence[int]) -> BlockDataset:
        return BlockDataset(self.blocks, indices, self.teacher_blocks)

    def input_ids(self) -> Tensor:
        """``(examples, block_size)`` token ids in dataset order (what a top-k cache is filled from)."""
        return self.blocks.input_ids[self.indices]

    @property
    def scored_tokens(self) -> int:
        return int((self.targets[self.indices] != -100).sum())


@dataclass
class LMTask:
    name: str
    train: BlockDataset
    evaluation: dict[str, BlockDataset]  # the per-epoch split first
    tokenizer: Any
    tokenizer_path: str
    vocab_size: int
    score_split: str = "test"
    info: dict[str, Any] = field(default_factory=dict)
    generation: GenerationSpec = field(default_factory=GenerationSpec)  # the recipe's generation: settings
    teacher_tokenizer: Any = None  # the teacher's, when it tokenises otherwise than the student (ULD)

    @property
    def two_encodings(self) -> bool:
        """The teacher reads its own encoding (``teacher_`` keys): the run's teacher is marked to."""
        return self.teacher_tokenizer is not None

    def side(self, model: nn.Module) -> tuple[dict[str, BlockDataset], Any]:
        """The evaluation splits and the tokenizer of ``model``: the teacher's own when it is marked as the
        teacher of a two-tokenizer task, else the student's."""
        if self.two_encodings and getattr(model, "distill_teacher_encoding", False):
            return {name: split.for_teacher() for name, split in self.evaluation.items()}, self.teacher_tokenizer
        return self.evaluation, self.tokenizer

    inputs: ClassVar[str] = "tokens"
    cache_teacher: ClassVar[bool] = False  # dense LM logits do not fit in memory: the top-k cache is on disk
    latency_repeats: ClassVar[int] = 5

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    def model_context(self, seed: int = 0, source: nn.Module | None = None) -> ModelContext:
        return ModelContext(self.vocab_size, head="causal_lm", source=source, seed=seed)

    def eval_split(self) -> tuple[str, Dataset]:
        first = next(iter(self.evaluation))
        return first, self.evaluation[first]

    def trainer_options(self, settings: TrainSettings, needs_index: bool = False) -> dict[str, Any]:
        # the per-epoch evaluation holds a batch's (B, L, vocabulary) logits: EVAL_BATCH blocks unless the
        # recipe sets eval_batch_size itself (the default of 512 would be gigabytes)
        chosen = "eval_batch_size" in settings.model_fields_set
        return {"train_data": self.train, "eval_batch_size": settings.eval_batch_size if chosen else EVAL_BATCH}

    def sample_inputs(self, count: int = 2) -> dict[str, Tensor]:
        items = [self.train[i] for i in range(min(count, len(self.train)))]
        return {key: torch.stack([item[key] for item in items]) for key in ("input_ids", "attention_mask")}

    def split_metrics(self, model: nn.Module, split: str) -> dict[str, float]:
        """Next-token ``accuracy``, mean NLL (``loss``) and ``perplexity`` of ``model`` on ``split``."""
        from distill.lm.objective import logits_of_lm

        with evaluating(model):
            loader = DataLoader(self.side(model)[0][split], batch_size=EVAL_BATCH)
            metrics = evaluate(lambda inputs: logits_of_lm(model, inputs), loader)
        return {**metrics, "perplexity": math.exp(min(metrics["loss"], 700.0))}

    @torch.no_grad()
    def teacher_kl(self, model: nn.Module, teacher: nn.Module, split: str | None = None) -> float:
        """Held-out ``KL(p_T ‖ p_S)`` per scored token of ``split`` (default the scored one), at T = 1."""
        from distill.lm.objective import logits_of_lm
        from distill.losses.lm import forward_kl_loss

        total, tokens = 0.0, 0
        with evaluating(model), evaluating(teacher):
            for batch in DataLoader(self.evaluation[split or self.score_split], batch_size=EVAL_BATCH):
                mask = batch["labels"] != -100
                student_logits, teacher_logits = logits_of_lm(model, batch), logits_of_lm(teacher, batch)
                count = int(mask.sum())
                total += float(forward_kl_loss(student_logits, teacher_logits, mask=mask)) * count
                tokens += count
        return total / max(tokens, 1)

    def scores(self, model: nn.Module) -> dict[str, float]:
        order = [self.score_split, *(name for name in self.evaluation if name != self.score_split)]
        return {split: self.split_metrics(model, split)["accuracy"] for split in order}

    def score(self, model: nn.Module) -> float:
        return self.split_metrics(model, self.score_split)["accuracy"]

    def latency_probe(self) -> dict[str, Tensor]:
        """One block of the scored split: a forward pass over ``data.max_length`` tokens."""
        item = self.evaluation[self.score_split][0]
        return {"input_ids": item["input_ids"][None], "attention_mask": item["attention_mask"][None]}

    def row_details(self, model: nn.Module, teacher: nn.Module | None, run_dir: Path | None) -> dict[str, Any]:
        """Perplexity per split, KL to the teacher, tokens/s of training and generation, sample generations."""
        from distill.lm.report import lm_details

        return lm_details(self, model, teacher, self.generation, run_dir)

    def artefact_inputs(self) -> None:
        return None

    def build_context(self) -> BuildContext:
        return BuildContext(num_examples=len(self.train), num_classes=self.vocab_size)

    def with_train(self, indices: Sequence[int] | None = None, labels: bool = True) -> LMTask:
        if not labels:
            raise ValueError("a language-model corpus is its own labels: transfer.labels false does not apply")
        chosen = self.train.indices if indices is None else [self.train.indices[i] for i in indices]
        return dataclasses.replace(self, train=self.train.subset(chosen))

    def with_unlabeled(self) -> LMTask:
        return self

    def describe(self) -> dict[str, Any]:
        block = self.train.blocks.input_ids.shape[1]
        return {
            "dataset": self.name,
            "metric": "accuracy",
            "metric_label": f"next-token accuracy ({self.score_split})",
            "train_examples": len(self.train),
            "evaluation_examples": len(self.evaluation[self.score_split]),
            "train_tokens": self.train.scored_tokens,
            "latency_probe": f"1 x {block} tokens",
            "head": "causal_lm",  # what `distill export` rebuilds: AutoModelForCausalLM
            "tokenizer": self.tokenizer_path,
            **self.info,
        }


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block, its training flag restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------- loading


def _tokenizer_path(recipe: Any) -> str:
    model = recipe.teacher.model
    if getattr(model, "kind", None) != "causal_lm":
        raise ValueError(
            f"data.dataset {recipe.data.dataset!r} is language modelling: teacher.model.kind must be causal_lm "
            f"(got {getattr(model, 'kind', None)!r})"
        )
    return str(model.path)


def _encode(texts_or_pairs: Any, spec: Any, tokenizer: Any) -> Blocks:
    if isinstance(texts_or_pairs, tuple):  # (prompts, completions)
        return encode_pairs(*texts_or_pairs, tokenizer, spec.max_length, chat=spec.chat)
    return pack_corpus(texts_or_pairs, tokenizer, spec.max_length)


def _read_split(path: str, spec: Any) -> Any:
    if spec.prompt is not None:
        return read_pairs(path, spec.prompt, spec.completion)
    if not isinstance(spec.text, str):
        raise ValueError("data.text: a language-model corpus has one text column, not a list")
    return read_texts(path, spec.text)


def _raw_splits(spec: Any, data_dir: str | None) -> dict[str, Any]:
    """``{"train": ..., "validation": ..., "test": ...}`` texts (or pairs) as given; missing splits absent."""
    if spec.dataset == "kjv":
        folder = Path(data_dir or spec.data_dir or default_data_dir("kjv"))
        corpus = folder / "kjv.jsonl"
        if not corpus.is_file():
            raise FileNotFoundError(f"no {corpus}: pass data.data_dir, the folder of kjv.jsonl (../shared/data/kjv)")
        splits = {"train": "train", "validation": "dev", "test": "test"}
        return {name: read_kjv(corpus, split) for name, split in splits.items()}
    splits = {"train": _read_split(spec.train, spec)}
    for name in ("validation", "test"):
        if getattr(spec, name) is not None:
            splits[name] = _read_split(getattr(spec, name), spec)
    return splits


def _student_tokenizer(recipe: Any, teacher_path: str, teacher_tokenizer: Any) -> tuple[str, Any] | None:
    """``(path, tokenizer)`` of a student from its own folder whose vocabulary is not the teacher's, else None.

    Token-level losses compare distributions over one vocabulary, so a different one is refused unless the
    recipe's loss is the cross-tokenizer ``uld``."""
    from distill.lm.models import load_tokenizer

    student = recipe.student.model
    if getattr(student, "kind", None) != "causal_lm" or student.layers is not None or str(student.path) == teacher_path:
        return None
    tokenizer = load_tokenizer(student.path)
    if tokenizer.get_vocab() == teacher_tokenizer.get_vocab():
        return None
    if recipe.distill.response_loss != "uld":
        raise ValueError(
            f"the student's tokenizer ({student.path}, {len(tokenizer):,} tokens) is not the teacher's "
            f"({teacher_path}, {len(teacher_tokenizer):,} tokens): token-level losses compare one vocabulary; use "
            "distill.response_loss: uld (cross-tokenizer, Boizard et al. 2024), or a student with the teacher's "
            "tokenizer"
        )
    if "train" in recipe.teacher.model_fields_set or recipe.teacher.cache is not None:
        raise ValueError("with two tokenizers the teacher is used as it is: drop teacher.train and teacher.cache")
    return str(student.path), tokenizer


def word_chunks(texts: Sequence[str], words: int) -> list[str]:
    """Texts cut into pieces of ``words`` words: what two tokenizers encode separately (no packing across)."""
    pieces = []
    for text in texts:
        tokens = text.split()
        pieces += [" ".join(tokens[start : start + words]) for start in range(0, len(tokens), words)]
    return pieces


def _encode_both(raw: Any, spec: Any, student: Any, teacher: Any) -> tuple[Blocks, Blocks]:
    """The same examples in the student's and the teacher's tokens, row by row (see :mod:`distill.losses.uld`
    for how positions are paired): pairs as they are, a corpus in pieces of ``max_length // 2`` words."""
    if isinstance(raw, tuple):
        return encode_pairs(*raw, student, spec.max_length, chat=spec.chat), encode_pairs(
            *raw, teacher, spec.max_length, chat=spec.chat
        )
    pieces = word_chunks(raw, max(1, spec.max_length // 2))
    empty = [""] * len(pieces)  # a corpus piece is all completion: every token scored
    return (
        encode_pairs(empty, pieces, student, spec.max_length, chat=False),
        encode_pairs(empty, pieces, teacher, spec.max_length, chat=False),
    )


def load_lm_task(recipe: Any, data_dir: str | None = None) -> LMTask:
    """The language-modelling task of ``recipe.data`` (see the module docstring)."""
    from distill.lm.models import load_tokenizer

    spec = recipe.data
    teacher_path = _tokenizer_path(recipe)
    teacher_tokenizer = load_tokenizer(teacher_path)
    own = _student_tokenizer(recipe, teacher_path, teacher_tokenizer)
    tokenizer_path, tokenizer = own if own is not None else (teacher_path, teacher_tokenizer)
    raw_splits = _raw_splits(spec, data_dir)
    if own is None:
        encoded = {name: (_encode(raw, spec, tokenizer), None) for name, raw in raw_splits.items()}
    else:
        encoded = {name: _encode_both(raw, spec, tokenizer, teacher_tokenizer) for name, raw in raw_splits.items()}
    blocks, teacher_blocks = encoded["train"]
    train = BlockDataset(blocks, seeded_subset(len(blocks), spec.train_subset, spec.split_seed), teacher_blocks)
    evaluation: dict[str, BlockDataset] = {}
    if "validation" not in encoded and spec.val_size:
        if spec.val_size >= len(train):
            raise ValueError(f"data.val_size is {spec.val_size} but train has only {len(train)} blocks")
        held = set(seeded_subset(len(train), spec.val_size, spec.split_seed))
        evaluation["validation"] = train.subset([train.indices[i] for i in sorted(held)])
        train = train.subset([row for i, row in enumerate(train.indices) if i not in held])
    for name in ("validation", "test"):
        if name in encoded:
            split, teacher_split = encoded[name]
            chosen = seeded_subset(len(split), spec.eval_subset, spec.split_seed)
            evaluation[name] = BlockDataset(split, chosen, teacher_split)
    if not evaluation:
        raise ValueError(
            "a language-model run needs text to evaluate on: give data.validation, data.test or data.val_size"
        )
    score_split = "test" if "test" in evaluation else "validation"
    generation = getattr(recipe, "generation", None) or GenerationSpec()
    return LMTask(
        spec.dataset,
        train,
        evaluation,
        tokenizer,
        tokenizer_path,
        len(tokenizer),
        score_split,
        generation=generation,
        teacher_tokenizer=None if own is None else teacher_tokenizer,
    )
