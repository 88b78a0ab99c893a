"""Feature-based losses: the student imitates the teacher's intermediate representations.

Shapes: ``(B, D)`` (one vector per example), ``(B, L, D)`` (one per token, masked by a ``(B, L)``
padding mask) or ``(B, C, H, W)`` feature maps. A feature map is one *position* per example: it is
flattened to ``(B, C·H·W)``, so without a mask the loss is the plain mean, and a mask, if any, is
per example ``(B,)``. Valid positions are selected before computing (see
:mod:`distill.losses.masking`), so padded values, even inf or NaN, never reach the result or its
gradient. Student and teacher must have the same shape: put a connector in between otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask, check_same_shape, mean_or_zero, select_positions
from distill.losses.registry import register


def _check_map_mask(tensor: Tensor, mask: Tensor | None, what: str) -> None:
    if tensor.dim() == 4 and mask is not None and mask.dim() != 1:
        # A (B, L) text mask reaching a 4-D tensor is almost always attention maps sent to the
        # wrong loss; say so instead of a bare shape mismatch.
        raise ValueError(
            f"{what}: 4-D features {tuple(tensor.shape)} take no mask or a per-example (batch,) mask, "
            f"got mask shape {tuple(mask.shape)}; for (batch, heads, length, length) attention "
            "use attention_mse or attention_kl"
        )


def _positions(tensor: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """``tensor`` as ``(valid_positions, features)``; a 4-D feature map is one position per example."""
    if tensor.dim() == 4:
        _check_map_mask(tensor, mask, what)
        tensor = tensor.reshape(tensor.shape[0], -1)
    elif tensor.dim() not in (2, 3):
        raise ValueError(
            f"{what}: features must be (batch, dim), (batch, length, dim) or (batch, channels, height, "
            f"width); got shape {tuple(tensor.shape)}"
        )
    return select_positions(tensor, mask, what)


def _mse(student: Tensor, teacher: Tensor, mask: Tensor | None, what: str) -> Tensor:
    check_same_shape(student, teacher, what)
    s = _positions(student, mask, what)
    t = _positions(teacher, mask, what)
    return mean_or_zero((s - t) ** 2, s)


@register("hidden_mse")
def hidden_mse_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between hidden states: ``mean over valid positions and features of (s − t)²``.

    The hidden-state term of TinyBERT (Jiao et al. 2020) and TextBrewer's ``hid_mse_loss`` (without the
    connector, which the caller applies).

    Shapes: ``(B, D)`` with mask ``(B,)``; ``(B, L, D)`` with mask ``(B, L)``; ``(B, C, H, W)`` with no
    mask (plain mean) or a per-example ``(B,)`` mask.
    """
    return _mse(student, teacher, mask, "hidden_mse")


@register("cosine")
def cosine_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cosine embedding loss of DistilBERT (Sanh et al. 2019): ``mean over valid positions of 1 − cos(s, t)``.

    The cosine is taken along the last dimension; a ``(B, C, H, W)`` feature map is first flattened
    to one ``C·H·W`` vector per example. It aligns directions only, ignoring the vectors' norms.
    Norms are clamped at 1e-8 (``F.cosine_similarity``) so an all-zero vector gives cos = 0, not NaN.

    Shapes as in :func:`hidden_mse_loss`.
    """
    check_same_shape(student, teacher, "cosine")
    s = _positions(student, mask, "cosine")
    t = _positions(teacher, mask, "cosine")
    return mean_or_zero(1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8), s)


@register(
    "fitnet",
    title="FitNets hint",
    paper="Romero et al. ICLR 2015",
    knowledge="feature",
    inputs="one feature map + connector",
    recipe="matches: [{student: block2, teacher: block2, loss: fitnet, connector: conv1x1, weight: 100}]",
    order=1,
)
@register("hint")
def hint_loss(
    student: Tensor,
    teacher: Tensor,
    connector: Callable[[Tensor], Tensor] | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """FitNets hint loss (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").

    ``mean of (connector(student) − teacher)²`` over valid positions and features, where the
    connector (the paper's *regressor*, e.g. a 1×1 conv for feature maps) maps the thinner student
    feature onto the teacher's shape; ``None`` means identity, for features that already match.

    The connector must be trained jointly with the student (its parameters in the optimizer, as
    :class:`distill.Distiller` does); left untrained, the student would have to match the hint
    through a fixed random projection. It is discarded after training. With a mask, padded student
    positions are zeroed before the connector, which should act per position (linear, mlp, 1×1 conv).

    Shapes: after the connector, as in :func:`hidden_mse_loss`.
    """
    if connector is None:
        return _mse(student, teacher, mask, "hint")
    if mask is not None:
        # Zero the padding *before* the connector: its weight gradient sums input × output-gradient
        # over every position, so an inf/NaN padded input would poison it although the loss never
        # selects that position.
        _check_map_mask(student, mask, "hint")
        positions = student.shape[:1] if student.dim() == 4 else student.shape[:-1]
        valid = check_mask(mask, positions, "hint")
        valid = valid.reshape(*valid.shape, *([1] * (student.dim() - valid.dim())))
        student = torch.where(valid, student, torch.zeros((), dtype=student.dtype, device=student.device))
    return _mse(connector(student), teacher, mask, "hint")
