"""Train a soft decision tree on labels or distil a network into it (Frosst & Hinton 2017); ``kind: tree``.

:class:`TreeSpec` builds the tree and gives it this objective. The objective follows the Trainer's
protocol (:class:`~distill.core.objective.Objective`). With ``T`` the targets
(one-hot labels, or the frozen teacher's ``softmax(z_T / temperature)``), ``P^l`` the path
probabilities and ``Q_l`` the leaf distributions of :class:`~distill.models.soft_tree.SoftDecisionTree`::

    total = soft_weight · CE(T_teacher) + hard_weight · CE(T_labels) + C_tree

where ``C_tree`` is the tree's routing penalty (already weighted by its ``λ``) and ``CE`` is one of

* ``leaf_loss="mixture"`` (default): ``−Σ_k T_k log Σ_l P^l Q_lk``, the cross-entropy of the mixture
  prediction, i.e. the library's ``hard_ce`` / ``soft_ce`` applied to the tree's log-probabilities;
* ``leaf_loss="path_weighted"``: ``Σ_l P^l · (−Σ_k T_k log Q_lk)``, the paper's eq. 2 as its text
  describes it ("the cross entropy between each leaf, weighted by its path probability, and the
  target"; the printed formula's outer ``−log`` is read as a typo). It pushes every reached leaf to be
  right on its own, which makes the single max-path leaf a better predictor.

Only the teacher's targets are softened by ``temperature``; the tree's output is a probability
mixture and is used as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distill.core.batch import Batch, Inputs, logits_of
from distill.core.distiller import freeze
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses import hard_ce_loss, soft_ce_loss
from distill.models.registry import ModelContext, ModelSpec, register_model
from distill.models.soft_tree import SoftDecisionTree, TreeOutput

LeafLoss = Literal["mixture", "path_weighted"]
Prediction = Literal["mixture", "max_path"]


def _tensor_inputs(inputs: Inputs) -> Tensor:
    if isinstance(inputs, Mapping):
        raise TypeError("SoftTreeObjective: a soft decision tree takes tensor inputs, not a mapping of tensors")
    return inputs


def path_weighted_ce(log_paths: Tensor, log_leaves: Tensor, targets: Tensor) -> Tensor:
    """``mean_x Σ_l P^l(x) · (−Σ_k T_k(x) log Q_lk)``, the paper's eq. 2.

    Shapes: ``log_paths`` ``(B, L)`` (``log P^l(x)``), ``log_leaves`` ``(L, C)`` (``log Q_l``), ``targets``
    ``(B, C)`` probabilities. With no example the loss is zero, attached to the graph.
    """
    if targets.shape[0] == 0:
        return log_paths.sum() * 0.0 + log_leaves.sum() * 0.0
    leaf_ce = -targets @ log_leaves.transpose(0, 1)  # (B, L): each leaf's cross-entropy with the target
    return (log_paths.exp() * leaf_ce).sum(dim=1).mean()


class SoftTreeObjective:
    """Trainer objective for a :class:`~distill.models.soft_tree.SoftDecisionTree`.

    Args:
        tree: the tree; it is the ``trainable`` module.
        teacher: a trained network to distil from (frozen here: eval mode, no gradients); ``None``
            trains on the labels alone.
        temperature: softens the teacher's targets, ``softmax(z_T / temperature)``; number or schedule.
        soft_weight: weight of the teacher term (``soft_ce``); only with a teacher.
        hard_weight: weight of the label term (``hard_ce``); defaults to 1 without a teacher and 0 with one.
        leaf_loss: ``mixture`` or ``path_weighted`` (see the module docstring).
        prediction: what :meth:`predict` (evaluation) returns: the log mixture, or ``max_path``, the log
            distribution of each example's most probable leaf (the paper's explainable test-time rule).

    Terms: ``soft_ce`` and ``hard_ce`` when their weight is non-zero, ``tree_penalty``, ``total``.
    """

    def __init__(
        self,
        tree: nn.Module,
        teacher: nn.Module | None = None,
        temperature: ScheduleLike = 1.0,
        soft_weight: ScheduleLike = 1.0,
        hard_weight: ScheduleLike | None = None,
        leaf_loss: LeafLoss = "mixture",
        prediction: Prediction = "mixture",
    ) -> None:
        if leaf_loss not in ("mixture", "path_weighted"):
            raise ValueError(f"SoftTreeObjective: leaf_loss must be 'mixture' or 'path_weighted', got {leaf_loss!r}")
        if prediction not in ("mixture", "max_path"):
            raise ValueError(f"SoftTreeObjective: prediction must be 'mixture' or 'max_path', got {prediction!r}")
        self.trainable = tree
        self.teacher = freeze(teacher) if teacher is not None else None
        self.temperature: Schedule = as_schedule(temperature)
        self.soft_weight: Schedule = as_schedule(soft_weight if teacher is not None else 0.0)
        default_hard = 1.0 if teacher is None else 0.0
        self.hard_weight: Schedule = as_schedule(default_hard if hard_weight is None else hard_weight)
        self.leaf_loss = leaf_loss
        self.prediction = prediction

    # ------------------------------------------------------------------ the objective protocol

    def to(self, device: torch.device) -> SoftTreeObjective:
        if self.teacher is not None:
            self.teacher.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        inputs = _tensor_inputs(inputs)
        if self.prediction == "max_path":
            return model.max_path_predict(inputs, log=True)
        return model(inputs)

    @torch.no_grad()
    def teacher_logits(self, inputs: Tensor) -> Tensor:
        assert self.teacher is not None
        if self.teacher.training:  # someone called teacher.train(); dropout must stay off
            self.teacher.eval()
        return logits_of(self.teacher(inputs))

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        inputs = _tensor_inputs(batch.inputs)
        output: TreeOutput = model(inputs, details=True)  # through forward, so a DDP wrapper sees the pass
        terms: dict[str, Tensor] = {}
        total = output.penalty
        soft_weight = self.soft_weight(step, total_steps)
        if soft_weight:
            terms["soft_ce"] = self._soft_term(output, inputs, self.temperature(step, total_steps))
            total = total + soft_weight * terms["soft_ce"]
        hard_weight = self.hard_weight(step, total_steps)
        if hard_weight:
            terms["hard_ce"] = self._hard_term(output, batch.labels)
            total = total + hard_weight * terms["hard_ce"]
        terms["tree_penalty"] = output.penalty
        terms["total"] = total
        return terms

    def _soft_term(self, output: TreeOutput, inputs: Tensor, temperature: float) -> Tensor:
        if not temperature > 0:
            raise ValueError(f"SoftTreeObjective: temperature must be > 0, got {temperature}")
        scaled = self.teacher_logits(inputs).to(output.log_probs.dtype) / temperature
        if self.leaf_loss == "mixture":
            # The tree's log-probabilities are normalised, so soft_ce at temperature 1 is −Σ T log p_tree.
            return soft_ce_loss(output.log_probs, scaled, temperature=1.0)
        return path_weighted_ce(output.log_paths, output.log_leaves, F.softmax(scaled, dim=-1))

    def _hard_term(self, output: TreeOutput, labels: Tensor) -> Tensor:
        if self.leaf_loss == "mixture":
            return hard_ce_loss(output.log_probs, labels)
        valid = labels != -100  # the library's ignore index, as in hard_ce
        targets = F.one_hot(labels[valid].long(), output.log_leaves.shape[1]).to(output.log_leaves.dtype)
        return path_weighted_ce(output.log_paths[valid], output.log_leaves, targets)


@register_model("tree")
class TreeSpec(ModelSpec):
    """``kind: tree``: a :class:`SoftDecisionTree` of ``depth`` levels, inverse temperature
    ``inverse_temperature``, routing penalty ``penalty_strength`` decayed by ``penalty_decay`` per level.
    It trains on its own objective (``leaf_loss``: ``mixture`` or ``path_weighted``, see
    :class:`~distill.models.soft_tree_objective.SoftTreeObjective`), and draws ``tree.png`` when distilled."""

    kind: Literal["tree"] = "tree"
    depth: int = Field(8, ge=1, le=12)
    inverse_temperature: float = Field(1.0, gt=0)
    penalty_strength: float = Field(0.1, ge=0)
    penalty_decay: float = Field(0.5, gt=0, le=1)
    leaf_loss: Literal["mixture", "path_weighted"] = "mixture"

    def build(self, context: ModelContext) -> nn.Module:
        return SoftDecisionTree(
            context.tensor_shape(self.kind),
            context.num_classes,
            self.depth,
            self.inverse_temperature,
            self.penalty_strength,
            self.penalty_decay,
        )

    def objective(self, model: nn.Module, teacher: nn.Module | None, distill: Any) -> Any:
        hard = None if teacher is None else distill.hard_weight
        return SoftTreeObjective(
            model, teacher, distill.temperature, distill.kd_weight, hard_weight=hard, leaf_loss=self.leaf_loss
        )

    def write_artefacts(self, model: nn.Module, inputs: Tensor, run_dir: Path) -> None:
        """``tree.png``: the learned filters (as pictures for single-channel images) and leaf distributions."""
        from distill.report.tree import plot_soft_tree

        shape = tuple(inputs.shape[1:])
        spatial = shape[1:] if len(shape) == 3 and shape[0] == 1 else shape
        image = (int(spatial[0]), int(spatial[1])) if len(spatial) == 2 else None
        plot_soft_tree(model, image, run_dir / "tree.png", max_depth=min(model.depth, 4), inputs=inputs[:512])
