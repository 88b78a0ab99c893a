"""Compose a frozen teacher, a student and feature matches into one loss per batch.

An *objective* is what the Trainer optimises. It exposes
``trainable`` (the one nn.Module handed to Accelerate), ``losses(model, batch, step, total_steps)``
(a dict of named loss terms plus ``total``), ``predict(model, inputs)`` (logits for evaluation),
``parts(model)`` (the modules a checkpoint saves) and ``to(device)`` (for what lives outside
``trainable``, such as the teacher). ``Distiller`` distils; ``SupervisedObjective`` trains on labels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distill import losses as loss_registry
from distill.batch import Batch, Inputs, call_model, logits_of
from distill.capture import Capture, resolve_module
from distill.connectors import build_connector
from distill.schedules import Schedule, ScheduleLike, as_schedule


@dataclass(frozen=True)
class FeatureMatch:
    """Pull the student's ``student`` module output towards the teacher's ``teacher`` module output.

    ``connector`` (identity | linear | conv1x1 | mlp) maps student features to the teacher's shape
    and is trained with the student. ``weight`` may be a number or a Schedule.
    """

    student: str
    teacher: str
    loss: str = "hidden_mse"
    weight: ScheduleLike = 1.0
    connector: str | None = None
    connector_hidden: int | None = None
    name: str | None = None

    @property
    def term_name(self) -> str:
        return self.name or f"{self.loss}:{self.student}->{self.teacher}"


def _connector_key(index: int) -> str:
    # ModuleDict keys may not contain dots, and dotted layer names are the norm.
    return f"match{index}"


class StudentWithConnectors(nn.Module):
    """The trainable module of a distillation: the student plus one connector per feature match.

    ``forward`` returns ``(student_output, features)`` where ``features[i]`` is match ``i``'s student
    feature after its connector. The student is a plain attribute, so ``model.student`` saved alone
    loads into the bare student model.
    """

    def __init__(self, student: nn.Module, feature_names: Sequence[str], connectors: Sequence[nn.Module]) -> None:
        super().__init__()
        self.student = student
        self.feature_names = list(feature_names)
        self.connectors = nn.ModuleDict({_connector_key(i): module for i, module in enumerate(connectors)})

    def forward(self, inputs: Inputs) -> tuple[object, list[Tensor]]:
        if not self.feature_names:
            return call_model(self.student, inputs), []
        with Capture(self.student, sorted(set(self.feature_names))) as captured:
            output = call_model(self.student, inputs)
        features = [self.connectors[_connector_key(i)](captured[name]) for i, name in enumerate(self.feature_names)]
        return output, features


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and requires_grad off: dropout and BatchNorm statistics of a teacher must not drift."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def _accepts(function: Callable, argument: str) -> bool:
    return argument in inspect.signature(function).parameters


def _sequence_mask(batch: Batch, tensor: Tensor) -> Tensor | None:
    """The padding mask applies to tensors laid out (batch, length, ...) or (batch, heads, length, length)."""
    mask = batch.mask
    if mask is None or tensor.dim() < 3:
        return None
    if tuple(tensor.shape[:2]) == tuple(mask.shape) or tensor.shape[-1] == mask.shape[-1]:
        return mask
    return None


class Distiller:
    """Offline distillation from a frozen teacher.

    total = kd_weight · response_loss(student_logits, teacher_logits, temperature)
          + hard_weight · CE(student_logits, labels)
          + Σ_matches weight · loss(connector(student_feature), teacher_feature)

    ``temperature`` and every weight may be a number or a :class:`Schedule` over optimizer steps.
    ``sample_inputs`` (a few real inputs) is needed when there are feature matches: the shapes seen
    on it size the connectors and are checked here, before training, not at step 1000.
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        response_loss: str | None = "kd",
        temperature: ScheduleLike = 4.0,
        kd_weight: ScheduleLike = 1.0,
        hard_weight: ScheduleLike = 0.0,
        matches: Sequence[FeatureMatch] = (),
        sample_inputs: Inputs | None = None,
    ) -> None:
        self.teacher = freeze(teacher)
        self.response_loss = response_loss
        self.response_fn = loss_registry.get(response_loss) if response_loss else None
        self.temperature: Schedule = as_schedule(temperature)
        self.kd_weight: Schedule = as_schedule(kd_weight)
        self.hard_weight: Schedule = as_schedule(hard_weight)
        self.matches = list(matches)
        self.match_fns = [loss_registry.get(match.loss) for match in self.matches]
        self.match_weights = [as_schedule(match.weight) for match in self.matches]
        self._check_unique_term_names()
        connectors = self._build_connectors(student, sample_inputs)
        self.trainable = StudentWithConnectors(student, [m.student for m in self.matches], connectors)

    def _check_unique_term_names(self) -> None:
        names = [match.term_name for match in self.matches]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"feature matches share the term name(s) {repeated}; give each a distinct 'name'")

    def _build_connectors(self, student: nn.Module, sample_inputs: Inputs | None) -> list[nn.Module]:
        for match in self.matches:  # names first: a typo is reported with the valid names
            resolve_module(student, match.student)
            resolve_module(self.teacher, match.teacher)
        if not self.matches:
            return []
        if sample_inputs is None:
            raise ValueError("Distiller needs sample_inputs (a few real inputs) to size and check feature matches")
        student_features = _probe(student, [m.student for m in self.matches], sample_inputs)
        teacher_features = _probe(self.teacher, [m.teacher for m in self.matches], sample_inputs)
        connectors = []
        for match in self.matches:
            student_shape = tuple(student_features[match.student].shape)
            teacher_shape = tuple(teacher_features[match.teacher].shape)
            kind = match.connector or "identity"
            try:
                connectors.append(build_connector(kind, student_shape, teacher_shape, match.connector_hidden))
            except ValueError as error:
                raise ValueError(f"feature match {match.term_name!r}: {error}") from None
        return connectors

    # ------------------------------------------------------------------ the objective protocol

    def to(self, device: torch.device) -> Distiller:
        self.teacher.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        parts = {"model": model.student}
        if any(True for _ in model.connectors.parameters()):
            parts["connectors"] = model.connectors
        return parts

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of(call_model(model.student, inputs))

    @torch.no_grad()
    def teacher_outputs(self, inputs: Inputs) -> tuple[Tensor, dict[str, Tensor]]:
        if self.teacher.training:  # someone called teacher.train(); dropout must stay off
            self.teacher.eval()
        names = sorted({match.teacher for match in self.matches})
        with Capture(self.teacher, names, detach=True) as captured:
            logits = logits_of(call_model(self.teacher, inputs))
        return logits, {name: captured[name] for name in names}

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        teacher_logits, teacher_features = self.teacher_outputs(batch.inputs)
        output, student_features = model(batch.inputs)
        student_logits = logits_of(output)
        terms: dict[str, Tensor] = {}
        total = student_logits.new_zeros(())
        kd_weight = self.kd_weight(step, total_steps)
        if self.response_fn is not None and kd_weight:
            term = self._response_term(student_logits, teacher_logits, batch, step, total_steps)
            terms[self.response_loss] = term
            total = total + kd_weight * term
        hard_weight = self.hard_weight(step, total_steps)
        if hard_weight:
            terms["hard_ce"] = loss_registry.hard_ce_loss(student_logits, batch.labels)
            total = total + hard_weight * terms["hard_ce"]
        for index, match in enumerate(self.matches):
            weight = self.match_weights[index](step, total_steps)
            if not weight:
                continue
            student_feature, teacher_feature = student_features[index], teacher_features[match.teacher]
            term = self.match_fns[index](student_feature, teacher_feature, mask=_sequence_mask(batch, teacher_feature))
            terms[match.term_name] = term
            total = total + weight * term
        terms["total"] = total
        return terms

    def _response_term(
        self, student_logits: Tensor, teacher_logits: Tensor, batch: Batch, step: int, total_steps: int | None
    ) -> Tensor:
        kwargs = {"mask": _sequence_mask(batch, student_logits)}
        if _accepts(self.response_fn, "temperature"):
            kwargs["temperature"] = self.temperature(step, total_steps)
        return self.response_fn(student_logits, teacher_logits, **kwargs)


def _probe(model: nn.Module, names: Sequence[str], sample_inputs: Inputs) -> dict[str, Tensor]:
    """Run ``model`` once on ``sample_inputs`` in eval mode and record the named outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), Capture(model, sorted(set(names)), detach=True) as captured:
            call_model(model, sample_inputs)
        return {name: captured[name] for name in names}
    finally:
        model.train(was_training)


class SupervisedObjective:
    """Plain training on labels (a teacher, or a student baseline): total = CE(logits, labels)."""

    def __init__(self, model: nn.Module) -> None:
        self.trainable = model

    def to(self, device: torch.device) -> SupervisedObjective:
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of(call_model(model, inputs))

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        logits = logits_of(call_model(model, batch.inputs))
        loss = loss_registry.hard_ce_loss(logits, batch.labels)
        return {"hard_ce": loss, "total": loss}
