"""Text tasks ready for the Trainer: sequence classification (single sentences or pairs) and token tagging.

:func:`distill.tasks.text_files.text_task_from` tokenises once and bundles what a run needs: indexed
datasets (each item carries ``index``, so the teacher cache can key on it), a dynamic-padding collate,
a length-grouped batch sampler driven by the Trainer's generator, and the task metric (entity F1 for tagging).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.core.batch import call_model, logits_of
from distill.core.evaluation import evaluate
from distill.core.method import BuildContext
from distill.data.text import LengthGroupedSampler
from distill.models.hf.loading import Task as Head
from distill.models.hf.loading import random_tokens
from distill.models.registry import ModelContext
from distill.tasks.ner_metrics import entity_scores, word_tags_from_logits

if TYPE_CHECKING:
    from distill.train.settings import TrainSettings

LATENCY_SHAPE = (32, 64)  # batch x length of the CPU latency probe


class Indexed(Dataset):
    """Adds each example's ``index`` to the dict a text dataset yields."""

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int] | None = None,
        hide_labels: bool = False,
        unlabeled: frozenset[int] = frozenset(),
    ) -> None:
        self.dataset = dataset
        self.indices = list(range(len(dataset))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.hide_labels = hide_labels  # a transfer set: every label -100, ignored by every loss
        self.unlabeled = unlabeled  # dataset indices that never have a label (data.unlabeled)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        item = {**self.dataset[self.indices[position]], "index": torch.tensor(position)}
        if self.hide_labels or self.indices[position] in self.unlabeled:
            item["labels"] = torch.full_like(item["labels"], -100)
        return item

    @property
    def lengths(self) -> list[int]:
        lengths = self.dataset.lengths  # type: ignore[attr-defined]
        return [lengths[i] for i in self.indices]


class GroupedBatches(Sampler[list[int]]):
    """Length-grouped batches whose order is drawn from ``generator`` (reseeded by the Trainer per epoch)."""

    def __init__(self, lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> None:
        self.lengths, self.batch_size, self.generator = list(lengths), batch_size, generator

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        seed = int(torch.randint(0, 2**31 - 1, (), generator=self.generator))
        return iter(LengthGroupedSampler(self.lengths, self.batch_size, seed=seed).batches())


def tagging_metric(
    label_names: Sequence[str], scheme: str = "BIO"
) -> Callable[[list[Tensor], list[Tensor]], dict[str, float]]:
    """Entity-level micro F1 (exact span and type, seqeval, for ``scheme``) from token logits and labels."""

    def metric(logits: list[Tensor], labels: list[Tensor]) -> dict[str, float]:
        gold: list[list[str]] = []
        predicted: list[list[str]] = []
        for batch_logits, batch_labels in zip(logits, labels, strict=True):
            predicted += word_tags_from_logits(batch_logits, batch_labels, label_names)
            gold += [[label_names[int(t)] for t in row if int(t) != -100] for row in batch_labels]
        return entity_scores(gold, predicted, scheme)

    metric.label = "entity F1"  # type: ignore[attr-defined]
    return metric


def multilabel_metric(logits: list[Tensor], labels: list[Tensor]) -> dict[str, float]:
    """Micro-averaged precision, recall and F1 over every (example, class) decision, a class predicted
    when its logit is above 0 (probability above 0.5); rows with hidden labels (-100) are left out."""
    predicted = torch.cat([batch > 0 for batch in logits])
    gold = torch.cat([batch > 0.5 for batch in labels])
    rows = torch.cat([batch[:, 0] != -100 for batch in labels])
    predicted, gold = predicted[rows], gold[rows]
    true_positive = int((predicted & gold).sum())
    precision = true_positive / max(int(predicted.sum()), 1)
    recall = true_positive / max(int(gold.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall}


multilabel_metric.label = "micro F1"  # type: ignore[attr-defined]


@dataclass
class TextTask:
    name: str
    kind: Head
    train: Indexed
    evaluation: dict[str, Indexed]
    label_names: list[str]
    collate: Callable[[list], dict[str, Tensor]]
    metric: Callable[[list[Tensor], list[Tensor]], dict[str, float]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    vocab_size: int = 30522
    score_split: str = "test"
    unlabeled: list[int] = field(default_factory=list)  # indices of train.dataset holding data.unlabeled texts
    two_encodings: bool = False  # the teacher tokenises otherwise: its encoding rides under teacher_ keys
    retokenise: Callable[[Any, Any], TextTask] | None = None  # (student tokenizer, teacher's or None) -> task

    inputs: ClassVar[str] = "tokens"
    cache_teacher: ClassVar[bool] = True  # tokenised once, no augmentation: teacher outputs never change
    latency_repeats: ClassVar[int] = 10  # a transformer forward costs tens of milliseconds

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def score_name(self) -> str:
        """The headline metric: accuracy for classification, entity F1 for tagging, micro F1 for multi-label."""
        return "accuracy" if self.kind == "sequence" else "f1"

    def sample_inputs(self, count: int = 4) -> dict[str, Tensor]:
        """The first ``count`` training inputs, padded: the Distiller's probe batch."""
        batch = self.collate([self.train[i] for i in range(min(count, len(self.train)))])
        return {key: value for key, value in batch.items() if key not in ("labels", "index")}

    def batches(self, batch_size: int) -> Callable[[torch.Generator], Sampler]:
        """The Trainer's ``train_sampler``: length-grouped batches of ``batch_size``."""
        return lambda generator: GroupedBatches(self.train.lengths, batch_size, generator)

    # ------------------------------------------------------------------ the Task protocol

    def model_context(self, seed: int = 0, source: nn.Module | None = None) -> ModelContext:
        return ModelContext(self.num_labels, head=self.kind, label_names=self.label_names, source=source, seed=seed)

    def eval_split(self) -> tuple[str, Dataset]:
        first = next(iter(self.evaluation))
        return first, self.evaluation[first]

    def trainer_options(self, settings: TrainSettings, needs_index: bool = False) -> dict[str, Any]:
        return {
            "train_data": self.train,  # items carry their index already
            "collate_fn": self.collate,
            "train_sampler": self.batches(settings.batch_size),
            "metric": self.metric,
        }

    def scores(self, model: nn.Module) -> dict[str, float]:
        """The headline metric (fraction) on every evaluation split, the scored split first."""
        was_training = model.training
        model.eval()
        try:
            result = {}
            order = [self.score_split, *(name for name in self.evaluation if name != self.score_split)]
            for split in order:
                dataset = self.evaluation[split]
                loader = DataLoader(dataset, batch_size=128, collate_fn=self.collate)
                metrics = evaluate(lambda inputs: logits_of(call_model(model, inputs)), loader, metric=self.metric)
                result[split] = metrics[self.score_name]
            return result
        finally:
            model.train(was_training)

    def score(self, model: nn.Module) -> float:
        return self.scores(model)[self.score_split]

    def latency_probe(self) -> dict[str, Tensor]:
        """A full (no padding) batch of random token ids, ``LATENCY_SHAPE`` (batch x length)."""
        return random_tokens(self.vocab_size, *LATENCY_SHAPE)

    def artefact_inputs(self) -> None:
        return None

    def build_context(self) -> BuildContext:
        return BuildContext(num_examples=len(self.train), num_classes=self.num_labels)

    def with_train(self, indices: Sequence[int] | None = None, labels: bool = True) -> TextTask:
        base = self.train.indices
        chosen = base if indices is None else [base[i] for i in indices]
        hide = self.train.hide_labels or not labels
        train = Indexed(self.train.dataset, chosen, hide_labels=hide, unlabeled=self.train.unlabeled)
        info = {**self.info, "train_examples": len(chosen)}
        source = self.info.get("source_indices")  # file position of each example of the tokenised dataset
        if source is not None:
            info["train_indices"] = [source[i] for i in chosen]
        return dataclasses.replace(self, train=train, info=info)

    def with_unlabeled(self) -> TextTask:
        """The same task with ``data.unlabeled``'s texts added to its training set, labels hidden (-100):
        what a distilled student learns from (Hinton's transfer set). Itself when there are none."""
        if not self.unlabeled:
            return self
        train = Indexed(
            self.train.dataset,
            [*self.train.indices, *self.unlabeled],
            hide_labels=self.train.hide_labels,
            unlabeled=frozenset(self.unlabeled),
        )
        info = {**self.info, "train_examples": len(train), "unlabeled_examples": len(self.unlabeled)}
        return dataclasses.replace(self, train=train, info=info, unlabeled=[])

    def describe(self) -> dict[str, Any]:
        metric = {"sequence": "accuracy", "token": "entity F1", "multilabel": "micro F1"}[self.kind]
        return {
            "dataset": self.name,
            "metric": self.score_name,
            "metric_label": f"{metric} ({self.score_split})",
            "train_examples": len(self.train),
            "evaluation_examples": len(self.evaluation[self.score_split]),
            "latency_probe": f"{LATENCY_SHAPE[0]} x {LATENCY_SHAPE[1]} tokens",
            "head": self.kind,  # what `distill export` rebuilds: AutoModelFor{Sequence,Token}Classification
            "label_names": self.label_names,
            **{key: self.info[key] for key in ("tokenizer", "teacher_tokenizer") if key in self.info},
        }
