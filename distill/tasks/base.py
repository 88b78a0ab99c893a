"""The :class:`Task` protocol: what the pipeline needs from a kind of data.

A task owns its splits and knows how to feed and score a model: the runner and every strategy talk to
it only through this protocol, so none of them asks whether the data are tensors or text. Two
implementations ship: :class:`~distill.tasks.tensor.TensorTask` (digits, MNIST, MNIST-1D, ...) and
:class:`~distill.tasks.text.TextTask` (sequence and token classification with Hugging Face models).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from torch import nn
from torch.utils.data import Dataset

from distill.core.batch import Inputs
from distill.core.method import BuildContext
from distill.models.registry import ModelContext

if TYPE_CHECKING:
    from distill.train.settings import TrainSettings

TaskInputs = Literal["tensor", "tokens"]


@runtime_checkable
class Task(Protocol):
    name: str
    num_classes: int
    inputs: TaskInputs  # what a model of this task reads; model kinds declare the same
    train: Dataset
    cache_teacher: bool  # examples carry an index and never change between epochs: teacher outputs are reused
    latency_repeats: int  # timed forward passes per latency measurement

    def model_context(self, seed: int = 0, source: nn.Module | None = None) -> ModelContext:
        """What a model builder needs (shapes or head kind), for a model initialised from ``seed``."""
        ...

    def eval_split(self) -> tuple[str, Dataset]:
        """The split evaluated after every epoch (validation when held out; never selected on test)."""
        ...

    def trainer_options(self, settings: TrainSettings, needs_index: bool = False) -> dict[str, Any]:
        """Keyword arguments of :class:`~distill.train.Trainer` for this data: ``train_data`` and, as the
        data need them, ``collate_fn``, ``train_sampler``, ``metric``, ``input_transform``."""
        ...

    def sample_inputs(self, count: int = 8) -> Inputs:
        """A few real training inputs: they size connectors and check layer names before training."""
        ...

    def score(self, model: nn.Module) -> float:
        """The headline metric (a fraction) of ``model`` on the scored split."""
        ...

    def scores(self, model: nn.Module) -> dict[str, float]:
        """The headline metric on every evaluation split, the scored split (``score``'s) first."""
        ...

    def latency_probe(self) -> Inputs:
        """The batch a CPU latency measurement runs."""
        ...

    def artefact_inputs(self) -> Inputs | None:
        """Inputs for pictures of a trained model (a tree's filters), or None."""
        ...

    def build_context(self) -> BuildContext:
        """What methods with state learn about the training set (CRD sizes its memory bank)."""
        ...

    def with_train(self, indices: Sequence[int] | None = None, labels: bool = True) -> Task:
        """The same task trained on ``indices`` of its training set (all by default), its labels hidden
        (-100) when ``labels`` is false: transfer sets."""
        ...

    def with_unlabeled(self) -> Task:
        """The task with its unlabelled examples (``data.unlabeled``) added to training, labels hidden; the
        task itself when it has none. Only distilled students train on it."""
        ...

    def describe(self) -> dict[str, Any]:
        """results.json's description of the data: ``dataset``, ``metric``, ``metric_label``,
        ``train_examples``, ``evaluation_examples``, ``latency_probe``."""
        ...
