"""Response-based losses: the student imitates the teacher's output logits.

Shapes: logits are ``(B, C)`` (one prediction per example) or ``(B, L, C)`` (one per token); a
*position* is one row of ``C`` logits. ``mask`` is ``(B,)`` or ``(B, L)`` (0/1 or bool) and excludes
positions. Valid positions are selected *before* anything is computed (see
:mod:`distill.losses.masking`), so padded logits, even inf or NaN, never reach the result or its
gradient. Every loss returns a scalar mean over valid positions; with no valid position it returns
zero, still attached to the graph so that ``backward()`` works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask, check_same_shape, mean_or_zero, select_positions
from distill.losses.multilabel import is_multi_label, multilabel_bce_loss
from distill.losses.registry import register
from distill.losses.temperature import scheduled_temperature


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, what: str) -> None:
    check_same_shape(student_logits, teacher_logits, what)
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            f"{what}: logits must be (batch, classes) or (batch, length, classes); "
            f"got shape {tuple(student_logits.shape)}"
        )


def _select_temperature(temperature: float | Tensor, logits: Tensor, mask: Tensor | None, what: str) -> float | Tensor:
    """A number, or the temperature of every valid position shaped ``(valid, 1)`` to broadcast over classes."""
    if not isinstance(temperature, Tensor):
        # Checked in Python: the common scalar case costs no device synchronisation.
        value = float(temperature)
        if not value > 0:  # also rejects NaN
            raise ValueError(f"{what}: temperature must be > 0, got {value}")
        return value
    positions = logits.shape[:-1]
    value = temperature.to(dtype=logits.dtype, device=logits.device)
    if value.dim() == 0:
        value = value.expand(positions)
    elif len(positions) == 2 and tuple(value.shape) == (positions[0],):
        value = value[:, None].expand(positions)  # one temperature per sequence, shared by its tokens
    elif tuple(value.shape) != tuple(positions):
        raise ValueError(
            f"{what}: temperature has shape {tuple(value.shape)} but the logits {tuple(logits.shape)} have "
            f"positions of shape {tuple(positions)}; pass a number, a (batch,) tensor or a "
            f"{tuple(positions)} tensor"
        )
    value = select_positions(value.unsqueeze(-1), mask, what)
    # Only valid positions are checked: a padded position may carry any placeholder.
    # `not (> 0)` also rejects NaN.
    if not bool((value > 0).all()):
        raise ValueError(f"{what}: temperature must be > 0, got {value.min().item()}")
    return value


def _where_mass(p: Tensor, values: Tensor) -> Tensor:
    """Σ_c p·values over the last dim, counting only classes with p > 0.

    Where the teacher gives a class no mass (e.g. a vocabulary entry masked to -inf in both models),
    ``p * log q`` would be ``0 * -inf = NaN``; selecting instead keeps the loss finite.
    """
    return torch.where(p > 0, p * values, torch.zeros((), dtype=p.dtype, device=p.device)).sum(-1)


@register(
    "kd",
    title="Hinton KD",
    paper="Hinton et al. 2015",
    knowledge="response",
    inputs="logits",
    recipe="response_loss: kd, temperature: 4, kd_weight: 0.9, hard_weight: 0.1",
    order=1,
)
def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 4.0,
    mask: Tensor | None = None,
    *,
    temperature_scheduler: str = "constant",
    scheduler_beta: float = 1.0,
    scheduler_gamma: float = 2.0,
) -> Tensor:
    """Knowledge-distillation loss of Hinton et al. (2015), "Distilling the Knowledge in a Neural Network".

    For each valid position, with ``p_T = softmax(z_T / T)`` and ``p_S = softmax(z_S / T)``::

        loss = T² · KL(p_T ‖ p_S) = T² · Σ_c p_T,c (log p_T,c − log p_S,c)

    then the mean over valid positions ("batchmean": sum over classes, mean over positions). The T²
    factor keeps the gradient magnitude independent of T, as recommended in the paper.

    Args:
        student_logits, teacher_logits: ``(B, C)`` or ``(B, L, C)``, same shape.
        temperature: ``T > 0``; a number, or a tensor of shape ``(B,)`` (one per example, shared by
            its tokens) or ``(B, L)`` (one per position; each position is scaled by its own T²).
        mask: ``(B,)`` or ``(B, L)``; 0 excludes a position.
        temperature_scheduler: ``constant`` (use ``temperature``), or ``flsw`` / ``cwsm``: a dynamic
            temperature per position around the number ``temperature``, computed without gradient
            from the logits (TextBrewer; see :mod:`distill.losses.temperature`). Each position is
            then scaled by its own T².
        scheduler_beta, scheduler_gamma: the schedulers' ``beta`` (both) and ``gamma`` (``flsw``).
    """
    _check_logits(student_logits, teacher_logits, "kd")
    temperature = scheduled_temperature(
        temperature_scheduler, temperature, student_logits, teacher_logits, mask, scheduler_beta, scheduler_gamma, "kd"
    )
    student = select_positions(student_logits, mask, "kd")
    teacher = select_positions(teacher_logits, mask, "kd")
    t = _select_temperature(temperature, student_logits, mask, "kd")
    log_p_s = F.log_softmax(student / t, dim=-1)
    p_t = F.softmax(teacher / t, dim=-1)
    # Subtract per class before summing: Σ p log p_T − Σ p log p_S cancels badly in float32 when the
    # KL is small. log(1) stands in where p_T = 0 (dropped anyway) so a teacher that needs gradients
    # (online distillation) never sees log 0 in its backward pass.
    log_p_t = torch.log(torch.where(p_t > 0, p_t, torch.ones((), dtype=p_t.dtype, device=p_t.device)))
    kl = _where_mass(p_t, log_p_t - log_p_s)
    # `like=student` (the selected rows), so an all-masked batch with NaN padding still gives 0, not NaN.
    weight = t.squeeze(-1) ** 2 if isinstance(t, Tensor) else t**2
    return mean_or_zero(kl * weight, student)


@register("soft_ce")
def soft_ce_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    *,
    temperature_scheduler: str = "constant",
    scheduler_beta: float = 1.0,
    scheduler_gamma: float = 2.0,
) -> Tensor:
    """Soft cross-entropy against the teacher's distribution (TextBrewer's ``kd_ce_loss``).

    For each valid position: ``−Σ_c softmax(z_T / T)_c · log softmax(z_S / T)_c``, then the mean over
    valid positions. Unlike :func:`kd_loss` there is no T² factor and the teacher's entropy is not
    subtracted; that entropy is constant for the student, so the student's gradient equals that of
    ``kd_loss / T²``.

    Shapes, ``temperature``/``mask`` and the ``temperature_scheduler`` options as in :func:`kd_loss`.
    """
    _check_logits(student_logits, teacher_logits, "soft_ce")
    temperature = scheduled_temperature(
        temperature_scheduler,
        temperature,
        student_logits,
        teacher_logits,
        mask,
        scheduler_beta,
        scheduler_gamma,
        "soft_ce",
    )
    student = select_positions(student_logits, mask, "soft_ce")
    teacher = select_positions(teacher_logits, mask, "soft_ce")
    t = _select_temperature(temperature, student_logits, mask, "soft_ce")
    log_p_s = F.log_softmax(student / t, dim=-1)
    p_t = F.softmax(teacher / t, dim=-1)
    return mean_or_zero(-_where_mass(p_t, log_p_s), student)


@register("logits_mse")
def logits_mse_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Mean squared error between logits at temperature ``T``: ``mean over valid positions and classes
    of (z_S / T − z_T / T)²``, i.e. the plain logit MSE divided by T².

    Matching logits directly is the high-temperature limit of KD (Hinton et al. 2015, section 2.1);
    used by e.g. Ba & Caruana (2014), "Do Deep Nets Really Need to be Deep?". The temperature is
    TextBrewer's ``kd_mse_loss`` (``src/textbrewer/losses.py``: both logits divided by T, then
    ``F.mse_loss``, a mean); ``T = 1`` is the plain MSE. As a ``response_loss`` it gets the recipe's
    ``temperature`` like ``kd`` does (unless ``response_options`` sets one), as TextBrewer applies its
    distillation temperature to ``kd_loss_type: mse``.

    Shapes: ``(B, C)`` or ``(B, L, C)``; ``mask`` ``(B,)`` or ``(B, L)``. ``temperature``: a finite
    number > 0.
    """
    _check_logits(student_logits, teacher_logits, "logits_mse")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"logits_mse: temperature must be a number, got {temperature!r}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"logits_mse: temperature must be a finite number > 0, got {temperature}")
    student = select_positions(student_logits, mask, "logits_mse")
    teacher = select_positions(teacher_logits, mask, "logits_mse")
    return mean_or_zero((student / temperature - teacher / temperature) ** 2, student)


@register("hard_ce")
def hard_ce_loss(
    student_logits: Tensor,
    labels: Tensor,
    ignore_index: int = -100,
    mask: Tensor | None = None,
) -> Tensor:
    """Cross-entropy with the ground-truth labels: ``mean over valid positions of −log softmax(z_S)_y``.

    A position counts when its label is not ``ignore_index`` (the Hugging Face convention, -100) and
    ``mask`` (if given) is 1. With no such position the loss is zero, attached to the graph.

    Shapes: logits ``(B, C)`` with integer labels ``(B,)``, or ``(B, L, C)`` with labels ``(B, L)``;
    ``mask`` has the labels' shape. Multi-label data (float 0/1 labels shaped like the logits) get the
    binary cross-entropy per class instead (:func:`~distill.losses.multilabel.multilabel_bce_loss`).
    """
    if is_multi_label(student_logits, labels):
        return multilabel_bce_loss(student_logits, labels, mask)
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            "hard_ce: logits must be (batch, classes) or (batch, length, classes); "
            f"got shape {tuple(student_logits.shape)}"
        )
    positions = student_logits.shape[:-1]
    if tuple(labels.shape) != tuple(positions):
        raise ValueError(
            f"hard_ce: labels shape {tuple(labels.shape)} does not match logits shape "
            f"{tuple(student_logits.shape)}; expected labels of shape {tuple(positions)}"
        )
    valid = labels != ignore_index
    if mask is not None:
        valid = valid & check_mask(mask, positions, "hard_ce")
    # Select before computing: padded logits (even NaN) and ignored labels never enter the loss.
    logits = student_logits[valid]
    targets = labels[valid].long()
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, reduction="mean")
