"""Compression steps: registered plug-ins that the ``compress:`` list of a recipe runs on the distilled
student, in order, one row of the deployment table each.

A step is a pydantic spec (its recipe fields) with ``apply(state)``; it changes ``state.model`` (a
PyTorch module) or turns it into an artefact (an ONNX file served by ONNX Runtime)::

    @register_step("prune")
    class Prune(CompressStep):
        kind: Literal["prune"] = "prune"
        amount: float = 0.5

        def apply(self, state: CompressState) -> None: ...

In a recipe each step is a one-key mapping, ``- {prune: {amount: 0.5}}``; ``- quantize`` alone takes
the step's defaults. An unknown step lists the registered ones; an unknown option lists the step's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SerializeAsAny, model_validator
from torch import Tensor, nn

from distill.kinds import KindRegistry
from distill.sections import RecipeSection

if TYPE_CHECKING:
    from distill.strategies.context import RunContext


@dataclass
class CompressState:
    """What the steps of one seed work on, in order.

    ``model`` is the current PyTorch model (the distilled student at first); ``before`` is the model as
    it was before the last step that changed it (a recovery step's default teacher); ``masks`` maps the
    names of pruned parameters of ``model`` to their keep-masks (1 kept, 0 pruned), which every later
    training step keeps applied; ``artefact`` is set once a step produced a served file (ONNX)."""

    context: RunContext
    seed: int
    model: nn.Module
    folder: Path  # <out>/seed-<s>/compress
    task: Any  # the data the steps train and score on (the run's task; re-tokenised by trim_vocab)
    teacher: nn.Module | None = None  # the run's teacher
    before: nn.Module | None = None
    masks: dict[str, Tensor] = field(default_factory=dict)
    clusters: dict[str, Tensor] = field(default_factory=dict)  # clustered parameters: each entry's cluster index
    artefact: Any = None  # an OnnxModel once a step exported or quantised to ONNX
    weights: Path | None = None  # the file the last step wrote (the row's size on disk)
    custom_layers: bool = False  # a step put in layers of its own (low rank): no transformers config has them
    details: dict[str, Any] = field(default_factory=dict)  # what the last step reports beside the table (parity)

    def step_folder(self, index: int, kind: str) -> Path:
        folder = self.folder / f"{index:02d}-{kind}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def keep_before(self) -> None:
        """Remember the current model as ``before``: a step is about to change it."""
        self.before = copy.deepcopy(self.model).eval().requires_grad_(False)

    def served(self) -> nn.Module:
        """What the table measures: the artefact once there is one, else the PyTorch model."""
        return self.artefact if self.artefact is not None else self.model

    def require_unshared(self, kind: str) -> None:
        """Refuse a step that would change which weights exist after pruning masks or clusters were set."""
        if self.masks or self.clusters:
            earlier = "unstructured pruning" if self.masks else "weight clustering"
            raise ValueError(f"compress {kind}: after {earlier} its masks or clusters would be lost; put {kind} first")

    def require_torch(self, kind: str) -> nn.Module:
        """The PyTorch model, for a step that changes weights; refused once the model became an artefact."""
        if self.artefact is not None:
            raise ValueError(
                f"compress: {kind} changes PyTorch weights, but an earlier step already turned the model into "
                f"{self.artefact.describe()}; put {kind} before quantize/export steps"
            )
        return self.model


class CompressStep(RecipeSection):
    """Base of every compression step's spec; validating a mapping against it picks the registered step."""

    kind: str = "prune"

    @model_validator(mode="wrap")
    @classmethod
    def _by_kind(cls, value: Any, handler: Callable[[Any], Any]) -> Any:
        if cls is CompressStep:  # a recipe's entry; a step class built directly takes its fields
            value = one_key_form(value)
        return _STEPS.validate_by_kind(CompressStep, cls, value, handler)

    def label(self) -> str:
        """The step's row label in the deployment table."""
        return self.kind

    def check(self, recipe: Any) -> None:
        """Raise ValueError when the rest of the recipe does not fit this step."""

    def apply(self, state: CompressState, index: int) -> None:
        raise NotImplementedError(f"compress step {self.kind!r} has no apply()")


def one_key_form(value: Any) -> Any:
    """``{prune: {amount: 0.5}}`` (or the bare name ``prune``) as ``{kind: prune, amount: 0.5}``."""
    if isinstance(value, str):
        return {"kind": value}
    if isinstance(value, dict) and "kind" not in value and len(value) == 1:
        ((kind, options),) = value.items()
        if options is None:
            return {"kind": kind}
        if isinstance(options, dict):
            return {"kind": kind, **options}
        raise ValueError(f"compress step {kind!r}: its options are a mapping, got {options!r}")
    if isinstance(value, dict) and "kind" not in value:
        raise ValueError(f"a compress step is a one-key mapping such as {{prune: {{amount: 0.5}}}}, got {value!r}")
    return value


AnyCompressStep = SerializeAsAny[CompressStep]
_STEPS: KindRegistry[type[CompressStep]] = KindRegistry("compress step", "prune")
register_step = _STEPS.register  # @register_step("prune") on a CompressStep subclass
step_names = _STEPS.names
step_class = _STEPS.get
