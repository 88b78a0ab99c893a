"""Module replacement: BERT-of-Theseus (Xu et al. 2020, "BERT-of-Theseus: Compressing BERT by Progressive
Module Replacing").

The predecessor's ``T`` layers are split into ``S`` consecutive groups of ``T / S`` layers; successor
layer ``i`` stands in for group ``i``. While training, each group is independently replaced by its
successor with probability ``p`` (a number, or a :class:`~distill.core.schedules.Schedule` over steps such as
the paper's curriculum ``p = min(1, k·t + b)``: ``{kind: linear, start: b, end: 1}``), so successors learn
to work inside the predecessor's context. Only the successor layers train; the predecessor (embeddings,
layers, head) is frozen. In eval mode every group is replaced, so evaluation measures the successor alone.
:meth:`TheseusObjective.successor` then returns a plain S-layer model of the predecessor's class,
which is fine-tuned alone (the paper's second phase).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from distill.capture.hf_structure import layout_of
from distill.core.batch import Batch, Inputs, call_model, logits_of
from distill.core.distiller import SupervisedObjective
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses import hard_ce_loss
from distill.models.hf.student import Strategy, student_from_teacher
from distill.strategies.context import RunContext, check_single_student
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.transfer import check_no_transfer


class ReplaceableGroup(nn.Module):
    """A group of predecessor layers that a successor layer replaces with probability ``probability``."""

    def __init__(self, predecessors: Sequence[nn.Module], successor: nn.Module) -> None:
        super().__init__()
        self.predecessors = nn.ModuleList(predecessors)
        self.successor = successor
        self.probability = 0.5

    def forward(self, hidden_states: Tensor, *args, **kwargs):
        # torch.rand draws from the global generator, which the Trainer seeds and checkpoints.
        if not self.training or bool(torch.rand(()) < self.probability):
            return self.successor(hidden_states, *args, **kwargs)
        output = hidden_states
        for layer in self.predecessors:
            output = layer(output[0] if isinstance(output, tuple) else output, *args, **kwargs)
        return output


def _groups(num_layers: int, successor_layers: int) -> list[range]:
    if num_layers % successor_layers:
        raise ValueError(
            f"BERT-of-Theseus splits the predecessor's {num_layers} layers into equal groups; "
            f"{successor_layers} successor layers do not divide them (use a divisor of {num_layers})"
        )
    size = num_layers // successor_layers
    return [range(i * size, (i + 1) * size) for i in range(successor_layers)]


class TheseusObjective:
    """The replacement phase as a Trainer objective: task cross-entropy of the compound model.

    ``successor_init`` picks the predecessor layers the successors start from (a mapping strategy of
    :func:`distill.models.hf.student.map_layers`, default ``skip``: the last layer of each group).
    """

    def __init__(
        self,
        predecessor: nn.Module,
        successor_layers: int,
        replace_probability: ScheduleLike = 0.5,
        successor_init: Strategy = "skip",
    ) -> None:
        self.layout = layout_of(predecessor)
        groups = _groups(self.layout.num_layers, successor_layers)
        self.replace_probability = as_schedule(replace_probability)
        successor = student_from_teacher(predecessor, successor_layers, successor_init)
        compound = copy.deepcopy(predecessor)
        for parameter in compound.parameters():
            parameter.requires_grad_(False)
        old_layers = compound.get_submodule(self.layout.layers)
        new_layers = successor.get_submodule(self.layout.layers)
        self.groups = nn.ModuleList(
            ReplaceableGroup([old_layers[i] for i in group], new_layers[index]) for index, group in enumerate(groups)
        )
        for group in self.groups:
            group.successor.requires_grad_(True)
        parent_name, _, attribute = self.layout.layers.rpartition(".")
        setattr(compound.get_submodule(parent_name), attribute, self.groups)
        self.trainable = compound
        self._template = successor

    def to(self, device: torch.device) -> TheseusObjective:
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of(call_model(model, inputs))

    def losses(self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None) -> dict:
        probability = float(self.replace_probability(step, total_steps))
        for group in self.groups:
            group.probability = probability
        logits = logits_of(call_model(model, batch.inputs))
        loss = hard_ce_loss(logits, batch.labels)
        total = loss
        if not total.requires_grad:
            # No group was replaced this step: nothing trainable ran. A zero term keeps backward() valid;
            # the step teaches nothing, as in the paper.
            total = loss + sum(p.sum() for g in self.groups for p in g.successor.parameters()) * 0.0
        return {"hard_ce": loss.detach(), "total": total, "replace_probability": torch.tensor(probability)}

    def successor(self) -> nn.Module:
        """The S-layer model: the predecessor's embeddings and head with the trained successor layers."""
        model = copy.deepcopy(self._template)
        layers = model.get_submodule(self.layout.layers)
        for index, group in enumerate(self.groups):
            layers[index].load_state_dict(group.successor.state_dict())
        compound = self.trainable
        state = {k: v for k, v in compound.state_dict().items() if not k.startswith(f"{self.layout.layers}.")}
        model.load_state_dict(state, strict=False)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model


@register_strategy("theseus")
class Theseus(StrategySpec):
    """``strategy: {kind: theseus, replace_probability: ...}``: per seed, the teacher's layers are replaced
    by ``student.model.layers`` successor layers (initialised from the teacher by ``student.model.layer_map``)
    with probability ``replace_probability``, training the successors inside the teacher; the successor
    model is then fine-tuned alone (the paper's second phase), both with ``student.train``. With
    ``student.baseline`` the student is also fine-tuned on labels alone from the same initial layers.

    Run folder: ``<out>/seed-<s>/{baseline, replacing, distilled}/``."""

    kind: Literal["theseus"] = "theseus"
    replace_probability: float | Schedule = 0.5

    def check(self, recipe: Any) -> None:
        check_no_transfer(recipe, self.kind)
        check_single_student(recipe, self.kind)
        student, teacher = recipe.student.model, recipe.teacher.model
        if teacher.kind != "hf" or student.kind != "hf" or student.layers is None:
            raise ValueError(
                "strategy theseus replaces a transformer's layers: teacher.model and student.model need kind hf, "
                f"the student with its number of layers; got teacher {teacher.kind!r}, student {student.kind!r}"
            )

    def preflight(self, context: RunContext) -> None:
        self._objective(context, context.build(context.recipe.teacher.model, 0))

    def _objective(self, context: RunContext, teacher: nn.Module) -> TheseusObjective:
        spec = context.recipe.student.model
        return TheseusObjective(teacher, spec.layers, self.replace_probability, spec.layer_map)

    def run(self, context: RunContext) -> list[Row]:
        teacher = context.teacher().model
        rows = []
        for seed in context.recipe.seeds:
            seed_dir = context.seed_dir(seed)
            if context.recipe.student.baseline:
                baseline = context.build_student(seed, source=teacher)
                context.train(SupervisedObjective(baseline), seed_dir / "baseline", seed, f"baseline s{seed}")
                rows.append(context.row("baseline", seed, baseline, seed_dir / "baseline"))
            torch.manual_seed(seed)
            objective = self._objective(context, teacher)
            context.train(objective, seed_dir / "replacing", seed, f"replacing s{seed}")
            successor = objective.successor()
            context.train(SupervisedObjective(successor), seed_dir / "distilled", seed, f"successor s{seed}")
            rows.append(context.row("distilled", seed, successor, seed_dir / "distilled"))
        return rows
