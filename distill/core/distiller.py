"""Compose a frozen teacher, a student and feature matches into one loss per batch.

:class:`Distiller` is an :class:`~distill.core.objective.Objective` (the protocol the Trainer calls);
:class:`PretrainObjective` is its pre-training stage, which trains the matches that declare one alone
before distillation proper. ``SupervisedObjective`` (labels alone) is re-exported from the protocol's module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from distill import losses as loss_registry
from distill.capture.hf_layers import check_layer_name, open_capture
from distill.core.batch import Batch, Inputs, call_model, logits_of
from distill.core.cache import TeacherCache, teacher_forward
from distill.core.matches import (
    BuiltMatch,
    FeatureMatch,
    build_matches,
    check_options,
    expand_matches,
    parameter_names,
    sequence_mask,
)
from distill.core.method import BuildContext, StepContext
from distill.core.objective import Objective, Stage, SupervisedObjective
from distill.core.schedules import Schedule, ScheduleLike, as_schedule

__all__ = [
    "Distiller",
    "FeatureMatch",
    "Objective",
    "PretrainObjective",
    "StudentWithConnectors",
    "SupervisedObjective",
    "freeze",
]


def _key(index: int) -> str:
    # ModuleDict keys may not contain dots, and dotted layer names are the norm.
    return f"match{index}"


class StudentWithConnectors(nn.Module):
    """The trainable module of a distillation: the student, a connector and a method module per match.

    ``forward(inputs)`` returns ``(student_output, {})``; given a ``context`` with the teacher's
    features it also computes the match terms, inside the module's forward so that DDP sees every
    parameter used. The student is a plain attribute, so ``model.student`` saved alone loads into
    the bare student model.
    """

    def __init__(self, student: nn.Module, built: Sequence[BuiltMatch]) -> None:
        super().__init__()
        self.student = student
        self.connectors = nn.ModuleDict({_key(i): match.connector for i, match in enumerate(built)})
        self.methods = nn.ModuleDict({_key(i): m.method for i, m in enumerate(built) if m.method is not None})
        self.built = list(built)  # a plain list: its modules are registered through the dicts above

    def forward(
        self,
        inputs: Inputs,
        teacher_features: Mapping[str, Tensor] | None = None,
        context: StepContext | None = None,
        active: Sequence[int] | None = None,
        pretrain: bool = False,
    ) -> tuple[Any, dict[str, Tensor]]:
        active = list(range(len(self.built))) if active is None else list(active)
        if teacher_features is None or not active:
            return call_model(self.student, inputs), {}
        assert context is not None
        needs_student = not pretrain or any(
            self.built[i].method is None or self.built[i].method.pretrain_needs_student for i in active
        )
        output, captured = None, {}
        if needs_student:
            names = sorted({name for i in active for name in self.built[i].student_layers})
            with open_capture(self.student, names) as recorded:
                output = call_model(self.student, inputs)
            captured = {name: recorded[name] for name in names}
            context = replace(context, student_logits=logits_of(output))
        terms = {}
        for index in active:
            match = self.built[index]
            student = match.connect([captured[n] for n in match.student_layers]) if captured else None
            teacher = match.teacher_input(teacher_features)
            if match.method is None:
                terms[match.term_name] = match.function_term(student, teacher, context)
            elif pretrain:
                terms[match.term_name] = match.method.pretrain_loss(student, teacher, context)
            else:
                terms[match.term_name] = match.method(student, teacher, context)
        return output, terms


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and requires_grad off: dropout and BatchNorm statistics of a teacher must not drift."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class Distiller:
    """Offline distillation from a frozen teacher.

    total = kd_weight · response_loss(student_logits, teacher_logits, temperature, **response_options)
          + hard_weight · CE(student_logits, labels)
          + Σ_matches weight · loss(connector(student_feature), teacher_feature, **options)

    ``temperature`` and every weight may be a number or a :class:`Schedule` over optimizer steps.
    ``sample_inputs`` (a few real inputs) is needed when there are feature matches: the shapes seen
    on it size the connectors and method modules and are checked here, before training.
    ``build_context`` tells methods about the training set (CRD sizes its memory bank from it).
    ``teacher_cache`` reuses the teacher's outputs per example (batches must carry ``index``; see cache.py).
    Matches whose stage is ``pretrain`` or ``both`` are trained alone first: see :meth:`stages`.
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
        response_options: Mapping[str, Any] | None = None,
        build_context: BuildContext | None = None,
        teacher_cache: TeacherCache | None = None,
    ) -> None:
        self.teacher = freeze(teacher)
        self.teacher_cache = teacher_cache
        self.response_loss = response_loss
        self.response_fn = loss_registry.get(response_loss) if response_loss else None
        self.response_options = dict(response_options or {})
        if response_loss:
            check_options(response_loss, self.response_options, "response_options")
        self.temperature: Schedule = as_schedule(temperature)
        self.kd_weight: Schedule = as_schedule(kd_weight)
        self.hard_weight: Schedule = as_schedule(hard_weight)
        self.matches = expand_matches(matches)
        self._check_unique_term_names()
        context = build_context or BuildContext()
        context.teacher = self.teacher
        built = self._build(student, sample_inputs, context)
        self.trainable = StudentWithConnectors(student, built)
        self.needs_index = any(m.method is not None and m.method.needs_index for m in built)

    def _check_unique_term_names(self) -> None:
        names = [match.term_name for match in self.matches]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"feature matches share the term name(s) {repeated}; give each a distinct 'name'")

    def _build(self, student: nn.Module, sample_inputs: Inputs | None, context: BuildContext) -> list[BuiltMatch]:
        student_names = sorted({name for m in self.matches for name in _names(m.student)})
        teacher_names = sorted({name for m in self.matches for name in _names(m.teacher)})
        for name in student_names:  # names first: a typo is reported with the valid names
            check_layer_name(student, name)
        for name in teacher_names:
            check_layer_name(self.teacher, name)
        if not self.matches:
            return []
        if sample_inputs is None:
            raise ValueError("Distiller needs sample_inputs (a few real inputs) to size and check feature matches")
        student_features = _probe(student, student_names, sample_inputs)
        teacher_features = _probe(self.teacher, teacher_names, sample_inputs)
        return build_matches(self.matches, student_features, teacher_features, context)

    @property
    def built(self) -> list[BuiltMatch]:
        return self.trainable.built

    @property
    def teacher_layers(self) -> list[str]:
        """Every teacher layer a match reads (what a teacher cache must hold besides the logits)."""
        return sorted({name for match in self.built for name in match.teacher_layers})

    # ------------------------------------------------------------------ the objective protocol

    def to(self, device: torch.device) -> Distiller:
        if not getattr(self.teacher_cache, "complete", False):  # a cache filled ahead never runs the teacher
            self.teacher.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        parts = {"model": model.student}
        for name in ("connectors", "methods"):
            module = getattr(model, name)
            if any(True for _ in module.state_dict()):
                parts[name] = module
        return parts

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of(call_model(model.student, inputs))

    def stages(self) -> list[Stage]:
        """The pre-training stage, when some match trains before distillation (AB, FSP, FT's paraphraser)."""
        indices = [i for i, match in enumerate(self.built) if match.stage in ("pretrain", "both")]
        if not indices:
            return []
        epochs = max(self.built[i].pretrain_epochs for i in indices)
        methods = [self.built[i].method for i in indices if self.built[i].method is not None]
        return [Stage("pretrain", epochs, PretrainObjective(self, indices), [m.end_pretrain for m in methods])]

    @torch.no_grad()
    def teacher_outputs(
        self, inputs: Inputs, indices: Sequence[int] | None = None, batch: Batch | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.teacher.training:  # someone called teacher.train(); dropout must stay off
            self.teacher.eval()
        chosen = self.built if indices is None else [self.built[i] for i in indices]
        names = sorted({name for match in chosen for name in match.teacher_layers})
        cache = self.teacher_cache if batch is not None and batch.index is not None else None
        if cache is not None:
            cached = cache.lookup(names, batch.index, batch.mask)
            if cached is not None:
                device = batch.labels.device
                return cached["logits"].to(device), {name: cached[name].to(device) for name in names}
        outputs = teacher_forward(self.teacher, names, inputs)
        if cache is not None:
            cache.store(outputs, batch.index, batch.mask)
        logits = outputs.pop("logits")
        return logits, outputs

    def step_context(self, batch: Batch, teacher_logits: Tensor, step: int, total_steps: int | None) -> StepContext:
        return StepContext(
            student_logits=teacher_logits,  # replaced by the student's logits once they exist
            teacher_logits=teacher_logits,
            labels=batch.labels,
            index=batch.index,
            mask=batch.mask,
            step=step,
            total_steps=total_steps,
        )

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        active = [i for i, match in enumerate(self.built) if match.stage in ("main", "both")]
        teacher_logits, teacher_features = self.teacher_outputs(batch.inputs, active, batch)
        context = self.step_context(batch, teacher_logits, step, total_steps)
        output, match_terms = model(batch.inputs, teacher_features, context, active)
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
        for index in active:
            match = self.built[index]
            weight = match.weight(step, total_steps)
            if weight:
                terms[match.term_name] = match_terms[match.term_name]
                total = total + weight * terms[match.term_name]
        terms["total"] = total
        return terms

    def _response_term(
        self, student_logits: Tensor, teacher_logits: Tensor, batch: Batch, step: int, total_steps: int | None
    ) -> Tensor:
        parameters = parameter_names(self.response_fn)
        kwargs: dict[str, Any] = {"mask": sequence_mask(batch.mask, student_logits), **self.response_options}
        if "temperature" in parameters and "temperature" not in self.response_options:
            kwargs["temperature"] = self.temperature(step, total_steps)
        if "labels" in parameters:
            kwargs["labels"] = batch.labels
        return self.response_fn(student_logits, teacher_logits, **kwargs)


def _names(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _probe(model: nn.Module, names: Sequence[str], sample_inputs: Inputs) -> dict[str, Tensor]:
    """Run ``model`` once on ``sample_inputs`` in eval mode and record the named outputs."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), open_capture(model, sorted(set(names)), detach=True) as captured:
            call_model(model, sample_inputs)
        return {name: captured[name] for name in names}
    finally:
        model.train(was_training)


class PretrainObjective:
    """Trains only the given matches of a Distiller, on their pre-training losses, summed by weight.

    The trainable module is the Distiller's own, so what this stage learns is what the main run
    starts from; parameters that no stage loss touches get no gradient and stay as they are.
    """

    def __init__(self, distiller: Distiller, indices: Sequence[int]) -> None:
        self.distiller = distiller
        self.indices = list(indices)
        self.trainable = distiller.trainable

    def to(self, device: torch.device) -> PretrainObjective:
        self.distiller.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return self.distiller.parts(model)

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return self.distiller.predict(model, inputs)

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        teacher_logits, teacher_features = self.distiller.teacher_outputs(batch.inputs, self.indices)
        context = self.distiller.step_context(batch, teacher_logits, step, total_steps)
        _, match_terms = model(batch.inputs, teacher_features, context, self.indices, True)
        terms: dict[str, Tensor] = {}
        total = teacher_logits.new_zeros(())
        for index in self.indices:
            match = self.distiller.built[index]
            terms[match.term_name] = match_terms[match.term_name]
            total = total + match.weight(step, total_steps) * terms[match.term_name]
        terms["total"] = total
        return terms
