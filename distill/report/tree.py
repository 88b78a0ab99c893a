"""Picture of a soft decision tree: the learned filter of every inner node and the class distribution of every leaf.

The inner nodes are drawn as a binary tree (the root on top; the left child is where ``x·w + b < 0``,
the right child where it is ``> 0``), each as its filter ``w_i``: an image in a diverging colour map
(red positive, blue negative, symmetric around 0) when the inputs are images, a line otherwise. The
leaf distributions ``Q_l`` are small bar charts along the bottom, the most probable class named.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.train.atomic import atomic_path


def _leaf_row(tree: nn.Module, shown: int, inputs: Tensor | None) -> Tensor:
    """The distributions drawn under the deepest shown level, ``(2^shown, C)``.

    When the tree is deeper than ``shown`` levels, the leaves of each hidden subtree are averaged:
    uniformly, or, given ``inputs``, weighted by their mean path probability over those inputs (the
    class distribution an input that reaches that subtree gets on average).
    """
    leaves = tree.leaf_distributions()
    groups = 2**shown
    if tree.depth == shown:
        return leaves
    if inputs is None:
        weights = torch.ones(leaves.shape[0], dtype=leaves.dtype, device=leaves.device)
    else:
        weights = tree.path_probabilities(inputs).mean(dim=0)
    weights = weights.reshape(groups, -1)
    grouped = leaves.reshape(groups, -1, leaves.shape[1])
    return (weights.unsqueeze(-1) * grouped).sum(1) / weights.sum(1, keepdim=True).clamp_min(1e-12)


def _draw_filter(axis, weights: Tensor, input_shape_2d: tuple[int, int] | None) -> None:
    values = weights.float().cpu().numpy()
    if input_shape_2d is None:
        axis.plot(values, linewidth=0.8, color="black")
        axis.axhline(0.0, color="grey", linewidth=0.5)
    else:
        limit = float(abs(values).max()) or 1.0
        axis.imshow(values.reshape(input_shape_2d), cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])


def _draw_leaf(axis, distribution: Tensor, class_names: Sequence[str]) -> None:
    values = distribution.float().cpu().numpy()
    best = int(values.argmax())
    colours = ["tab:orange" if k == best else "tab:blue" for k in range(len(values))]
    axis.bar(range(len(values)), values, color=colours, width=0.8)
    axis.set_ylim(0, 1)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(f"→ {class_names[best]}", fontsize=7, pad=2)


def _centre(row: int, index: int) -> float:
    return (index + 0.5) / 2**row


def _save_atomic(figure, path: Path) -> None:
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)


@torch.no_grad()
def plot_soft_tree(
    tree: nn.Module,
    input_shape_2d: tuple[int, int] | None,
    path: str | os.PathLike,
    max_depth: int = 4,
    class_names: Sequence[str] | None = None,
    inputs: Tensor | None = None,
) -> Path:
    """Draw ``tree`` (a :class:`~distill.models.soft_tree.SoftDecisionTree`) to the PNG ``path``; return the path.

    Args:
        input_shape_2d: ``(H, W)`` to show each filter as an image (``H·W`` must equal the tree's input
            features, e.g. ``(8, 8)`` for digits, ``(28, 28)`` for MNIST); ``None`` draws lines.
        max_depth: levels of inner nodes drawn; a deeper tree is cut there and its hidden subtrees are
            drawn as one averaged distribution each (said in the title).
        class_names: one name per class (default ``0 … C−1``).
        inputs: optional examples; for a cut tree they weight each hidden leaf by its mean path probability.

    Written through a temporary file and a rename, so a reader never sees a half-written image.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    if max_depth < 1:
        raise ValueError(f"plot_soft_tree: max_depth must be >= 1, got {max_depth}")
    if input_shape_2d is not None and input_shape_2d[0] * input_shape_2d[1] != tree.in_features:
        raise ValueError(
            f"plot_soft_tree: input_shape_2d {tuple(input_shape_2d)} has {input_shape_2d[0] * input_shape_2d[1]} "
            f"pixels but the tree's filters have {tree.in_features} weights; pass their (H, W) or None"
        )
    names = [str(k) for k in range(tree.num_classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != tree.num_classes:
        raise ValueError(f"plot_soft_tree: {len(names)} class_names for a tree with {tree.num_classes} classes")
    shown = min(tree.depth, max_depth)
    filters = tree.inner.weight.detach()
    leaves = _leaf_row(tree, shown, inputs)

    rows = shown + 1
    columns = 2**shown
    figure = plt.figure(figsize=(max(6.0, 0.9 * columns), 1.25 * rows + 0.8))
    top, bottom = 0.9, 0.02
    row_height = (top - bottom) / rows
    width, height = min(0.85 / columns, 0.2), 0.75 * row_height
    background = figure.add_axes((0, 0, 1, 1), zorder=-1)
    background.set_axis_off()
    background.set_xlim(0, 1)
    background.set_ylim(0, 1)
    for row in range(rows):
        y = top - (row + 0.5) * row_height
        for index in range(2**row):
            x = _centre(row, index)
            if row > 0:  # edge from the parent's bottom to this node's top (above a leaf's title)
                parent_y = top - (row - 0.5) * row_height - height / 2
                child_y = y + height / 2 + (0.035 if row == shown else 0.0)
                background.plot([_centre(row - 1, index // 2), x], [parent_y, child_y], color="0.7", lw=0.6)
            axis = figure.add_axes((x - width / 2, y - height / 2, width, height))
            if row < shown:
                _draw_filter(axis, filters[2**row - 1 + index], input_shape_2d)
            else:
                _draw_leaf(axis, leaves[index], names)
    title = f"Soft decision tree, depth {tree.depth}: inner-node filters (left: x·w+b < 0, right: > 0), leaf classes"
    if shown < tree.depth:
        weighting = "weighted by mean path probability over the given inputs" if inputs is not None else "uniformly"
        title += (
            f"\nshowing the top {shown} of {tree.depth} levels; each bottom chart averages the "
            f"{2 ** (tree.depth - shown)} leaves of its subtree ({weighting})"
        )
    figure.suptitle(title, fontsize=9)
    path = Path(path)
    try:
        _save_atomic(figure, path)
    finally:
        plt.close(figure)
    return path
