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

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.batch import Batch
from distill.core.schedules import Schedule, ScheduleLike, as_schedule
from distill.losses import hard_ce_loss, kd_loss, soft_ce_loss
from distill.models.cnn1d import SmallCNN1d

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

ResponseLoss = Literal["kd", "soft_ce"]
_RESPONSE_LOSSES: dict[str, Callable[..., Tensor]] = {"kd": kd_loss, "soft_ce": soft_ce_loss}


class ExitOutputs(NamedTuple):
    """What a :class:`MultiExitNetwork` returns: one entry per exit, shallowest first, deepest last."""

    logits: list[Tensor]  # (B, num_classes) each
    features: list[Tensor]  # (B, D) each: the classifier's input, D the deepest exit's width


class ExitHead(nn.Module):
    """One exit: ``bottleneck`` (block output -> feature ``(B, D)``) then ``head = Linear(D, num_classes)``.

    The classifier is named ``head`` so that the max-norm constraint (``apply_max_norm``) skips it, as
    it skips a plain MLP's classifier.
    """

    def __init__(self, bottleneck: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.bottleneck = bottleneck
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.bottleneck(x)
        return self.head(feature), feature


def _width(shape: Sequence[int]) -> int:
    """Feature width of a block output ``(B, F)`` or channels of ``(B, C, ...)``."""
    return int(shape[1])


def default_bottleneck(shape: Sequence[int], feature_dim: int, deepest: bool) -> nn.Module:
    """A bottleneck from a block output of ``shape`` (batch first) to a ``(B, feature_dim)`` feature.

    * ``(B, F)``: the deepest exit reads the features as they are; a shallow one through Linear + ReLU.
    * ``(B, C, L)`` / ``(B, C, H, W)``: global average pooling; a shallow exit first adds a 3-wide conv
      + BatchNorm + ReLU to ``feature_dim`` channels (BYOT's bottleneck gives shallow exits capacity of
      their own, so their loss does not have to be met by the shared backbone alone).
    """
    if len(shape) == 2:
        if deepest:
            return nn.Identity()
        return nn.Sequential(OrderedDict(fc=nn.Linear(shape[1], feature_dim), relu=nn.ReLU()))
    if len(shape) not in (3, 4):
        raise ValueError(
            f"no default exit for a block output of shape {tuple(shape)}; expected (B, F), (B, C, L) or "
            "(B, C, H, W), or pass heads= explicitly"
        )
    conv, norm, pool = (
        (nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d)
        if len(shape) == 3
        else (nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d)
    )
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if not deepest:
        # bias=False: the BatchNorm that follows has its own shift.
        layers["conv"] = conv(shape[1], feature_dim, kernel_size=3, padding=1, bias=False)
        layers["bn"] = norm(feature_dim)
        layers["relu"] = nn.ReLU()
    layers["pool"] = pool(1)
    layers["flatten"] = nn.Flatten()
    return nn.Sequential(layers)


@torch.no_grad()
def _block_output_shapes(blocks: Sequence[nn.Module], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Shapes of every block's output on a zero batch of two, in eval mode (no statistics move, no RNG drawn)."""
    modes = [block.training for block in blocks]
    shapes = []
    try:
        x = torch.zeros(2, *input_shape)
        for block in blocks:
            block.eval()
            x = block(x)
            shapes.append(tuple(x.shape))
    finally:
        for block, mode in zip(blocks, modes, strict=True):
            block.train(mode)
    return shapes


class MultiExitNetwork(nn.Module):
    """A backbone of sequential ``blocks`` with an exit after each (BYOT's shallow classifiers).

    ``forward(x, depth=None)`` runs the first ``depth`` blocks (default: all) and returns
    :class:`ExitOutputs` with one entry per block run, deepest last. Inputs are tensors.

    Exits: ``heads`` (one module per block, each returning ``(logits, feature)`` with features of one
    width), or else built by :func:`default_bottleneck` from the block output shapes seen on a zero
    batch of ``input_shape`` (without the batch dimension), with ``D`` the deepest block's width.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        num_classes: int | None = None,
        input_shape: Sequence[int] | None = None,
        heads: Sequence[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("a multi-exit network needs at least one block")
        if heads is None:
            if num_classes is None or input_shape is None:
                raise ValueError("MultiExitNetwork builds its exits from num_classes and input_shape; give both")
            heads = _default_heads(blocks, num_classes, input_shape)
        if len(heads) != len(blocks):
            raise ValueError(f"one exit per block: got {len(blocks)} blocks and {len(heads)} heads")
        self.blocks = nn.ModuleList(blocks)
        self.exits = nn.ModuleList(heads)

    @property
    def num_exits(self) -> int:
        return len(self.blocks)

    def forward(self, x: Tensor, depth: int | None = None) -> ExitOutputs:
        depth = self.num_exits if depth is None else depth
        if not 1 <= depth <= self.num_exits:
            raise ValueError(f"depth must be between 1 and {self.num_exits} (the number of blocks), got {depth}")
        logits, features = [], []
        for block, exit_head in zip(self.blocks[:depth], self.exits[:depth], strict=True):
            x = block(x)
            z, feature = exit_head(x)
            logits.append(z)
            features.append(feature)
        return ExitOutputs(logits, features)


def _default_heads(blocks: Sequence[nn.Module], num_classes: int, input_shape: Sequence[int]) -> list[ExitHead]:
    shapes = _block_output_shapes(blocks, input_shape)
    width = _width(shapes[-1])
    last = len(shapes) - 1
    return [ExitHead(default_bottleneck(shape, width, i == last), width, num_classes) for i, shape in enumerate(shapes)]


def multi_exit_mlp(
    input_shape: Sequence[int], hidden: Sequence[int], num_classes: int, dropout: float = 0.0
) -> MultiExitNetwork:
    """An :class:`~distill.models.MLP` cut after every hidden layer: block ``i`` is
    ``[flatten →] fc → relu [→ dropout]``; exit ``i`` reads ``hidden[i]`` features. The deepest path is
    the MLP itself (its exit is the MLP's ``Linear(hidden[-1], num_classes)`` head)."""
    if not hidden:
        raise ValueError("multi_exit_mlp needs at least one hidden layer (one block per exit)")
    blocks = []
    width = int(torch.Size(input_shape).numel())
    for index, size in enumerate(hidden):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if index == 0:
            layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(width, size)
        layers["relu"] = nn.ReLU()
        if dropout:
            layers["dropout"] = nn.Dropout(dropout)
        blocks.append(nn.Sequential(layers))
        width = size
    return MultiExitNetwork(blocks, num_classes, input_shape)


class _OneChannel(nn.Module):
    """``(B, L)`` -> ``(B, 1, L)``, as :class:`~distill.models.SmallCNN1d` reads a bare sequence."""

    def forward(self, x: Tensor) -> Tensor:
        return x.unsqueeze(1) if x.dim() == 2 else x


def multi_exit_cnn1d(
    input_shape: Sequence[int],
    channels: Sequence[int],
    num_classes: int,
    convs_per_block: int = 1,
    pool_blocks: int | None = None,
) -> MultiExitNetwork:
    """:class:`~distill.models.SmallCNN1d`'s blocks (same arguments, same layers) with an exit after each.

    The deepest exit is SmallCNN1d's global average pool + linear head; shallow exits add a conv
    bottleneck to the last block's channel count (see :func:`default_bottleneck`).
    """
    cnn = SmallCNN1d(input_shape, channels, num_classes, convs_per_block, pool_blocks)
    blocks = [cnn.get_submodule(f"block{number}") for number in range(1, len(channels) + 1)]
    blocks[0] = nn.Sequential(OrderedDict(channel=_OneChannel(), **dict(blocks[0].named_children())))
    return MultiExitNetwork(blocks, num_classes, input_shape)


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
