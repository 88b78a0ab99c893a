"""Multi-exit networks (BYOT's backbone with a classifier after every block), built from the MLP and 1-D CNN.

``kind: multi_exit`` wraps a ``backbone`` spec (``mlp`` or ``cnn1d``): the same layers, an exit after each
block. :class:`ExitView` serves one exit as a plain classifier (only the blocks it needs run).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from distill.models.cnn1d import SmallCNN1d
from distill.models.mlp import MLPSpec
from distill.models.registry import AnyModelSpec, ModelContext, ModelSpec, register_model


class ExitOutputs(NamedTuple):
    """What a :class:`MultiExitNetwork` returns: one entry per exit, shallowest first, deepest last."""

    logits: list[Tensor]  # (B, num_classes) each
    features: list[Tensor]  # (B, D) each: the classifier's input, D the deepest exit's width


class ExitHead(nn.Module):
    """One exit: ``bottleneck`` (block output -> feature ``(B, D)``) then ``head = Linear(D, num_classes)``.

    The classifier is named ``head`` so that the max-norm constraint
    (``distill.train.constraints.apply_max_norm``) skips it, as it skips a plain MLP's classifier.
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


class ExitView(nn.Module):
    """Exit ``depth`` of a multi-exit network as a plain classifier (runs only the blocks it needs)."""

    def __init__(self, network: MultiExitNetwork, depth: int) -> None:
        super().__init__()
        self.network, self.depth = network, depth

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x, depth=self.depth).logits[-1]

    def extra_repr(self) -> str:
        return f"depth={self.depth}"  # exits of one network differ only here (latency is timed per repr)

    def deployed_parameters(self) -> int:
        """Parameters a deployment of this exit keeps: its blocks and its own head."""
        modules = [*self.network.blocks[: self.depth], self.network.exits[self.depth - 1]]
        return sum(p.numel() for module in modules for p in module.parameters())


@register_model("multi_exit")
class MultiExitSpec(ModelSpec):
    """``kind: multi_exit``: the ``backbone`` network (``mlp`` or ``cnn1d``) with an exit after every block."""

    kind: Literal["multi_exit"] = "multi_exit"
    backbone: AnyModelSpec = MLPSpec()

    def build(self, context: ModelContext) -> nn.Module:
        spec, shape = self.backbone, context.tensor_shape(self.kind)
        builder = EXIT_BUILDERS.get(spec.kind)
        if builder is None:
            raise ValueError(f"multi_exit: backbone kind must be one of {sorted(EXIT_BUILDERS)}, got {spec.kind!r}")
        return builder(spec, shape, context.num_classes)


# backbone kind -> (its spec, input shape, classes) -> the network with an exit after every block
EXIT_BUILDERS: dict[str, Callable[[Any, tuple[int, ...], int], MultiExitNetwork]] = {
    "mlp": lambda spec, shape, classes: multi_exit_mlp(shape, spec.hidden, classes, spec.dropout),
    "cnn1d": lambda spec, shape, classes: multi_exit_cnn1d(shape, spec.channels, classes, spec.convs_per_block),
}
