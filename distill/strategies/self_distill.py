"""Self-distillation with exits (Zhang, Song, Gao, Chen, Bao & Ma 2019, "Be Your Own Teacher: Improve the
Performance of Convolutional Neural Networks via Self Distillation", ICCV; "BYOT").

The network is split into sequential blocks and an *exit* follows each block: a bottleneck that maps
the block's output to a feature ``F_i`` of the deepest exit's width ``D``, then a linear classifier
(``head``) giving logits ``z_i``. The deepest exit ``C`` (the original network) teaches the shallow ones
while everything trains together. With ``q_i = softmax(z_i / T)``::

    loss = CE(z_C, y)
         + Σ_{i < C} [ (1 − α) · CE(z_i, y) + α · T² · KL(q_C ‖ q_i) + λ · mean((F_i − F_C)²) ]

``q_C`` and ``F_C`` are *detached*: the deepest exit is the teacher and learns from the labels alone.

Choices, checked against the paper and the authors' code (github.com/ArchipLab-LinfengZhang/
pytorch-self-distillation-final, whose defaults are α = 0.3, λ = 0.03, T = 3, used here):

* the deepest exit's CE has weight 1, as in the authors' code;
* the soft term is ``kd`` (T² · KL, Hinton's scaling) by default; ``response_loss="soft_ce"`` gives the
  authors' code exactly (soft cross-entropy without T², i.e. the same gradient divided by T²);
* the feature hint is the mean squared error (the paper's ``‖F_i − F_C‖²`` averaged over batch and
  features, so λ does not depend on the batch size) on every shallow exit (the paper's version; the
  authors' final code adds a learned Linear and skips the shallowest exit).

After training, any exit can serve alone (``predict(..., exit_index=k)`` runs only the first ``k + 1``
blocks): the paper's depth-wise scalable inference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distill.core.batch import Batch
from distill.core.distiller import SupervisedObjective
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses import hard_ce_loss, kd_loss, soft_ce_loss
from distill.models.multi_exit import (
    ExitHead,
    ExitOutputs,
    ExitView,
    MultiExitNetwork,
    MultiExitSpec,
    default_bottleneck,
    multi_exit_cnn1d,
    multi_exit_mlp,
)

__all__ = [
    "ExitHead",
    "ExitOutputs",
    "MultiExitNetwork",
    "SelfDistillationObjective",
    "default_bottleneck",
    "multi_exit_cnn1d",
    "multi_exit_mlp",
    "self_distillation_losses",
]

from distill.strategies.context import RunContext, check_single_student
from distill.strategies.registry import Row, StrategySpec, register_strategy
from distill.strategies.transfer import check_no_transfer

ResponseLoss = Literal["kd", "soft_ce"]
_RESPONSE_LOSSES: dict[str, Callable[..., Tensor]] = {"kd": kd_loss, "soft_ce": soft_ce_loss}


def self_distillation_losses(
    outputs: ExitOutputs,
    labels: Tensor,
    alpha: float = 0.3,
    feature_weight: float = 0.03,
    temperature: float = 3.0,
    response_loss: ResponseLoss = "kd",
) -> dict[str, Tensor]:
    """BYOT's loss (module docstring) with its terms: ``exit{i}_ce`` for every exit, ``exit{i}_kd`` and
    ``exit{i}_feature`` for the shallow ones (``i`` counts from the shallowest, 0), and ``total``.

    Args:
        outputs: logits ``(B, C)`` and features ``(B, D)`` of ``n ≥ 2`` exits, deepest last.
        labels: ``(B,)`` class indices.
        alpha: ``α ∈ [0, 1]``, the share of a shallow exit's classification loss taken from the deepest exit.
        feature_weight: ``λ ≥ 0``, weight of the feature hint.
        temperature: ``T > 0`` of the soft term.
        response_loss: ``kd`` (T² · KL) or ``soft_ce`` (soft cross-entropy, no T²; the authors' code).
    """
    logits, features = outputs
    if len(logits) < 2:
        raise ValueError(f"self-distillation needs at least 2 exits (a shallow one to teach), got {len(logits)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if feature_weight < 0:
        raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
    if response_loss not in _RESPONSE_LOSSES:
        raise ValueError(f"response_loss must be one of {sorted(_RESPONSE_LOSSES)}, got {response_loss!r}")
    soft = _RESPONSE_LOSSES[response_loss]
    deepest = len(logits) - 1
    teacher_logits, teacher_feature = logits[-1].detach(), features[-1].detach()
    terms: dict[str, Tensor] = {f"exit{deepest}_ce": hard_ce_loss(logits[-1], labels)}
    total = terms[f"exit{deepest}_ce"]
    for i in range(deepest):
        if features[i].shape != teacher_feature.shape:
            raise ValueError(
                f"exit {i}'s feature has shape {tuple(features[i].shape)} but the deepest exit's has "
                f"{tuple(teacher_feature.shape)}; every exit's bottleneck must output the deepest exit's width"
            )
        ce = hard_ce_loss(logits[i], labels)
        kd = soft(logits[i], teacher_logits, temperature)
        hint = F.mse_loss(features[i], teacher_feature)
        terms[f"exit{i}_ce"], terms[f"exit{i}_kd"], terms[f"exit{i}_feature"] = ce, kd, hint
        total = total + (1 - alpha) * ce + alpha * kd + feature_weight * hint
    terms["total"] = total
    return terms


def _exit_position(exit_index: int, num_exits: int) -> int:
    """``exit_index`` (negative counts from the deepest) as a position ``0 … num_exits − 1``."""
    if not -num_exits <= exit_index < num_exits:
        raise ValueError(
            f"exit_index must index one of the {num_exits} exits (-{num_exits} … {num_exits - 1}), got {exit_index}"
        )
    return exit_index % num_exits


class SelfDistillationObjective:
    """BYOT as a Trainer objective: trains ``network`` (a :class:`MultiExitNetwork`) on the loss above.

    Args:
        network: at least 2 exits; trained in place, saved whole as the checkpoint's ``model``.
        alpha, feature_weight, temperature: ``α``, ``λ``, ``T`` (numbers or schedules over steps);
            defaults are the authors' code's (0.3, 0.03, 3).
        response_loss: ``kd`` (default) or ``soft_ce`` (see the module docstring).
        exit_index: the exit :meth:`predict` evaluates (default -1, the deepest).
    """

    def __init__(
        self,
        network: MultiExitNetwork,
        alpha: ScheduleLike = 0.3,
        feature_weight: ScheduleLike = 0.03,
        temperature: ScheduleLike = 3.0,
        response_loss: ResponseLoss = "kd",
        exit_index: int = -1,
    ) -> None:
        if network.num_exits < 2:
            raise ValueError(f"self-distillation needs at least 2 exits, the network has {network.num_exits}")
        if response_loss not in _RESPONSE_LOSSES:
            raise ValueError(f"response_loss must be one of {sorted(_RESPONSE_LOSSES)}, got {response_loss!r}")
        self.trainable = network
        self.alpha: Schedule = as_schedule(alpha)
        self.feature_weight: Schedule = as_schedule(feature_weight)
        self.temperature: Schedule = as_schedule(temperature)
        self.response_loss = response_loss
        self.exit_index = _exit_position(exit_index, network.num_exits)

    def to(self, device: torch.device) -> SelfDistillationObjective:
        return self  # everything lives in ``trainable``

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Tensor, exit_index: int | None = None) -> Tensor:
        """Logits of one exit (``exit_index``, else the objective's); only the blocks it needs run."""
        index = self.exit_index if exit_index is None else _exit_position(exit_index, model.num_exits)
        return model(inputs, depth=index + 1).logits[-1]

    def predict_all(self, model: nn.Module, inputs: Tensor) -> list[Tensor]:
        """Every exit's logits, shallowest first (one pass through the backbone)."""
        return model(inputs).logits

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        return self_distillation_losses(
            model(batch.inputs),  # through the (possibly DDP-wrapped) network: every exit runs
            batch.labels,
            self.alpha(step, total_steps),
            self.feature_weight(step, total_steps),
            self.temperature(step, total_steps),
            self.response_loss,
        )


@register_strategy("self_distill")
class BeYourOwnTeacher(StrategySpec):
    """``strategy: {kind: self_distill}`` (BYOT): per seed, the plain student on labels (``baseline``) and
    the same network with an exit after every block trained by the loss above; every exit is scored
    (rows ``exit``, indexed from 1, shallowest first). Needs an ``mlp`` or ``cnn1d`` student on tensors:
    exits are cut between blocks, which a transformer of this library does not expose yet."""

    kind: Literal["self_distill"] = "self_distill"
    alpha: float = Field(0.3, ge=0, le=1)
    feature_weight: float = Field(0.03, ge=0)
    temperature: float = Field(3.0, gt=0)

    def check(self, recipe: Any) -> None:
        check_no_transfer(recipe, self.kind)
        check_single_student(recipe, self.kind)
        if recipe.student.model.kind not in ("mlp", "cnn1d"):
            kind = recipe.student.model.kind
            raise ValueError(f"strategy self_distill needs student.model.kind mlp or cnn1d (tensor data), got {kind!r}")

    def preflight(self, context: RunContext) -> None:
        self._objective(context.build(MultiExitSpec(backbone=context.recipe.student.model), 0))

    def _objective(self, network: nn.Module) -> SelfDistillationObjective:
        return SelfDistillationObjective(network, self.alpha, self.feature_weight, self.temperature)

    def run(self, context: RunContext) -> list[Row]:
        rows = []
        for seed in context.recipe.seeds:
            plain, seed_dir = context.build_student(seed), context.seed_dir(seed)
            context.train(SupervisedObjective(plain), seed_dir / "baseline", seed, f"baseline s{seed}")
            rows.append(context.row("baseline", seed, plain, seed_dir / "baseline"))
            network = context.build(MultiExitSpec(backbone=context.recipe.student.model), seed)
            objective, run_dir = self._objective(network), seed_dir / "self-distilled"
            context.train(objective, run_dir, seed, f"self-distilled s{seed}")
            for depth in range(1, network.num_exits + 1):
                rows.append(context.row("exit", seed, ExitView(network, depth), index=depth))
        return rows
