"""Feature matches: which student layer imitates which teacher layer, with what loss.

A :class:`FeatureMatch` names layers by dotted module name. It may pair several layers at once
(``student: [block1, block2]``, ``teacher: [block1, block2]``, ``weight: [1, 0.5]``): a loss that
compares one pair expands into one term per pair, each with its own weight; a ``layer_lists``
loss (FSP) receives all the layers together. :func:`build_matches` turns the matches into
:class:`BuiltMatch` objects that know their connectors, their loss (a function with its options
bound, or a :class:`~distill.methods.base.MethodLoss` instance) and their training stage.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from distill import losses as loss_registry
from distill.core.connectors import build_connector
from distill.core.method import BuildContext, MethodLoss, StepContext, is_method
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses.registry import LossInfo, Stage

# Arguments the Distiller supplies itself; everything else a loss accepts is a recipe option.
SUPPLIED_ARGUMENTS = {
    *("student", "teacher", "student_layers", "teacher_layers", "mask", "labels", "context", "connector")
}
METHOD_ARGUMENTS = {"self", "student_shape", "teacher_shape", "context"}


@dataclass(frozen=True)
class FeatureMatch:
    """Pull the output of the student's ``student`` module(s) towards the teacher's ``teacher`` module(s).

    ``connector`` (identity | linear | conv1x1 | mlp) maps each student feature to the teacher's
    shape and is trained with the student. ``weight`` is a number or Schedule, or one per layer
    pair. ``options`` are keyword arguments of the loss (``{p: 2}`` for ``at``). ``stage`` overrides
    the loss's default stage (main | pretrain | both), ``pretrain_epochs`` its pre-training length.
    """

    student: str | Sequence[str]
    teacher: str | Sequence[str]
    loss: str = "hidden_mse"
    weight: ScheduleLike | Sequence[ScheduleLike] = 1.0
    connector: str | None = None
    connector_hidden: int | None = None
    name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    stage: Stage | None = None
    pretrain_epochs: int | None = None

    @property
    def term_name(self) -> str:
        if self.name:
            return self.name
        student, teacher = _as_list(self.student), _as_list(self.teacher)
        return f"{self.loss}:{'+'.join(student)}->{'+'.join(teacher)}"


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def expand_matches(matches: Sequence[FeatureMatch]) -> list[FeatureMatch]:
    """One match per layer pair (a ``layer_lists`` loss keeps its lists); weights checked and split."""
    expanded: list[FeatureMatch] = []
    for match in matches:
        student, teacher = _as_list(match.student), _as_list(match.teacher)
        if len(student) != len(teacher) or not student:
            raise ValueError(
                f"feature match {match.term_name!r}: {len(student)} student layer(s) {student} and "
                f"{len(teacher)} teacher layer(s) {teacher}; list the same number of layers on both sides"
            )
        weights = list(match.weight) if isinstance(match.weight, list | tuple) else None
        if loss_registry.info(match.loss).layer_lists:
            if weights is not None:
                raise ValueError(f"feature match {match.term_name!r}: loss {match.loss!r} takes one weight")
            expanded.append(replace(match, student=tuple(student), teacher=tuple(teacher)))
            continue
        if weights is not None and len(weights) != len(student):
            raise ValueError(
                f"feature match {match.term_name!r}: {len(weights)} weights for {len(student)} layer pairs; "
                "give one weight, or one per pair"
            )
        for index, (s, t) in enumerate(zip(student, teacher, strict=True)):
            name = match.name if len(student) == 1 else (f"{match.name}[{index}]" if match.name else None)
            weight = weights[index] if weights is not None else match.weight
            expanded.append(replace(match, student=s, teacher=t, weight=weight, name=name))
    return expanded


def accepted_options(loss: Callable) -> list[str]:
    """The option names a loss accepts (its keyword parameters minus those the Distiller supplies)."""
    target = loss.__init__ if is_method(loss) else loss
    parameters = inspect.signature(target).parameters
    skip = METHOD_ARGUMENTS if is_method(loss) else SUPPLIED_ARGUMENTS
    return [name for name, p in parameters.items() if name not in skip and p.kind is not p.VAR_POSITIONAL]


def check_options(loss_name: str, options: Mapping[str, Any], where: str) -> None:
    """Refuse unknown option names, and numbers that make no sense for a numeric option, before training."""
    loss = loss_registry.get(loss_name)
    known = accepted_options(loss)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {unknown} for loss {loss_name!r}; it accepts: {', '.join(known) or 'none'}"
        )
    parameters = inspect.signature(loss.__init__ if is_method(loss) else loss).parameters
    for name, value in options.items():
        problem = _numeric_option_problem(name, value, parameters[name].default)
        if problem:
            raise ValueError(f"{where}.{name}: {problem} for loss {loss_name!r}")


# options that are scales, sizes or guards against division by zero: 0 or below makes no sense
POSITIVE_OPTIONS = frozenset({"temperature", "nce_t", "eps", "init_pred_var", "feat_dim", "scheduler_gamma"})


def _numeric_option_problem(name: str, value: Any, default: Any) -> str | None:
    """What is wrong with ``value`` for an option whose default is a number (None when it is fine)."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return None  # not a numeric option: the loss itself checks it
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {value!r}"
    if not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if name in POSITIVE_OPTIONS and value <= 0:
        return f"{name} must be above 0, got {value:g}"
    if (name == "weight" or name.endswith("_weight")) and value < 0:
        return f"a weight must be at least 0 (0 switches the term off), got {value:g}"
    return None


@dataclass
class BuiltMatch:
    """A match ready to run: connectors, loss, weight schedule and stage."""

    match: FeatureMatch
    info: LossInfo
    weight: Schedule
    stage: Stage
    pretrain_epochs: int
    connector: nn.Module  # one module, or a ModuleList for layer lists
    method: MethodLoss | None
    function: Callable | None

    @property
    def term_name(self) -> str:
        return self.match.term_name

    @property
    def student_layers(self) -> list[str]:
        return _as_list(self.match.student)

    @property
    def teacher_layers(self) -> list[str]:
        return _as_list(self.match.teacher)

    def connect(self, features: Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Student features (one per layer) after their connectors, as the loss expects them."""
        if self.info.layer_lists:
            return [module(feature) for module, feature in zip(self.connector, features, strict=True)]
        return self.connector(features[0])

    def teacher_input(self, features: Mapping[str, Tensor]) -> Tensor | list[Tensor]:
        if self.info.layer_lists:
            return [features[name] for name in self.teacher_layers]
        return features[self.teacher_layers[0]]

    def function_term(self, student: Any, teacher: Any, context: StepContext) -> Tensor:
        """The term of a plain loss function: options bound, mask and labels passed where accepted."""
        assert self.function is not None
        parameters = parameter_names(self.function)
        kwargs = dict(self.match.options)
        if "mask" in parameters:
            # layer lists (FSP) share one layout: the first layer decides whether the padding mask applies
            kwargs["mask"] = sequence_mask(context.mask, teacher[0] if self.info.layer_lists else teacher)
        if "labels" in parameters:
            kwargs["labels"] = context.labels
        return self.function(student, teacher, **kwargs)


@functools.cache
def parameter_names(function: Callable) -> frozenset[str]:
    """The parameter names of a loss, looked up once: function_term runs at every training step."""
    return frozenset(inspect.signature(function).parameters)


def sequence_mask(mask: Tensor | None, tensor: Tensor) -> Tensor | None:
    """The padding mask applies to tensors laid out (batch, length, ...), (batch, heads, length, length)
    or (batch, heads, length, d_head) (value vectors)."""
    if mask is None or tensor.dim() < 3:
        return None
    if tuple(tensor.shape[:2]) == tuple(mask.shape) or tensor.shape[-1] == mask.shape[-1]:
        return mask
    if tensor.dim() == 4 and tensor.shape[0] == mask.shape[0] and tensor.shape[2] == mask.shape[1]:
        return mask
    return None


def build_matches(
    matches: Sequence[FeatureMatch],
    student_features: Mapping[str, Tensor],
    teacher_features: Mapping[str, Tensor],
    context: BuildContext,
) -> list[BuiltMatch]:
    """Build connectors and method modules from the feature shapes seen on a probe batch."""
    built = []
    for match in matches:
        try:
            built.append(_build_one(match, student_features, teacher_features, context))
        except (ValueError, TypeError) as error:
            raise ValueError(f"feature match {match.term_name!r}: {error}") from None
    return built


def _build_one(
    match: FeatureMatch,
    student_features: Mapping[str, Tensor],
    teacher_features: Mapping[str, Tensor],
    context: BuildContext,
) -> BuiltMatch:
    info = loss_registry.info(match.loss)
    loss = loss_registry.get(match.loss)
    check_options(match.loss, match.options, "options")
    students, teachers = _as_list(match.student), _as_list(match.teacher)
    pairs = list(zip(students, teachers, strict=True))
    shapes = [(tuple(student_features[s].shape), tuple(teacher_features[t].shape)) for s, t in pairs]
    # No connector: the loss compares the raw features and checks their shapes itself (AT and the
    # relation losses accept different widths); an explicit 'identity' insists on equal shapes.
    connectors = [
        build_connector(match.connector, s, t, match.connector_hidden) if match.connector else nn.Identity()
        for s, t in shapes
    ]
    connector = nn.ModuleList(connectors) if info.layer_lists else connectors[0]
    # Methods see the student shape *after* the connector: that is the tensor they will receive.
    connected = [_shape_after(c, student_features[s]) for c, s in zip(connectors, students, strict=True)]
    teacher_shapes = [tuple(teacher_features[t].shape) for t in teachers]
    method = None
    if is_method(loss):
        student_shape = connected if info.layer_lists else connected[0]
        teacher_shape = teacher_shapes if info.layer_lists else teacher_shapes[0]
        method = loss(student_shape, teacher_shape, context, **match.options)
    stage = match.stage or info.stage
    pretrain_epochs = match.pretrain_epochs if match.pretrain_epochs is not None else info.pretrain_epochs
    if stage != "main" and pretrain_epochs < 1:
        raise ValueError(f"stage {stage!r} needs pretrain_epochs >= 1, got {pretrain_epochs}")
    built = BuiltMatch(
        match=match,
        info=info,
        weight=as_schedule(match.weight),
        stage=stage,
        pretrain_epochs=pretrain_epochs,
        connector=connector,
        method=method,
        function=None if method is not None else loss,
    )
    if method is None:
        _dry_run(built, student_features, teacher_features)
    return built


def _dry_run(built: BuiltMatch, student_features: Mapping[str, Tensor], teacher_features: Mapping[str, Tensor]) -> None:
    """Evaluate a loss function once on the probe features: a shape mistake fails now, not mid-training."""
    with torch.no_grad():
        student = built.connect([student_features[name] for name in built.student_layers])
        teacher = built.teacher_input(teacher_features)
        placeholder = torch.zeros(0)
        built.function_term(student, teacher, StepContext(student_logits=placeholder, teacher_logits=placeholder))


def _shape_after(connector: nn.Module, feature: Tensor) -> tuple[int, ...]:
    was_training = connector.training
    connector.eval()  # BatchNorm in a connector must not learn from the probe batch
    try:
        with torch.no_grad():
            return tuple(connector(feature).shape)
    finally:
        connector.train(was_training)
