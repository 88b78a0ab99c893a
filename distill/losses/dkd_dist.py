"""Logit losses beyond the KL of softened distributions: DKD (decoupled target / non-target KD) and DIST
(Pearson correlation between and within classes).

Shapes, masks and temperatures follow :mod:`distill.losses.response`, whose checks these reuse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask, mean_or_zero, select_positions
from distill.losses.registry import register
from distill.losses.response import _check_logits, _select_temperature, _where_mass


def _kl_from_log_probs(log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
    """Σ_c p_T,c (log p_T,c − log p_S,c) per row, from log-probabilities (last dim).

    Working from log-probabilities keeps every term finite where a probability underflows to 0 (its
    log is still finite). A class the teacher rules out entirely (log p_T = −inf) is dropped as in
    :func:`_where_mass`; log 1 stands in for its log so the teacher's backward pass never sees −inf.
    """
    has_mass = log_p_t > -torch.inf
    safe_log_p_t = torch.where(has_mass, log_p_t, torch.zeros((), dtype=log_p_t.dtype, device=log_p_t.device))
    return _where_mass(log_p_t.exp(), safe_log_p_t - log_p_s)


def _check_labels(labels: Tensor, logits: Tensor, what: str) -> None:
    positions = logits.shape[:-1]
    if tuple(labels.shape) != tuple(positions):
        raise ValueError(
            f"{what}: labels shape {tuple(labels.shape)} does not match logits shape {tuple(logits.shape)}; "
            f"expected labels of shape {tuple(positions)}"
        )


def _check_targets(targets: Tensor, classes: int, what: str) -> None:
    """Targets of valid positions must name a class; an index out of range would otherwise fail obscurely."""
    if targets.numel() and not bool(((targets >= 0) & (targets < classes)).all()):
        bad = targets[(targets < 0) | (targets >= classes)][0].item()
        raise ValueError(f"{what}: label {bad} is not a class index in [0, {classes}) nor the ignore index -100")


def _target_split(scaled: Tensor, is_target: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: ``(log b, non-target logits)`` where ``b = (p_t, 1 − p_t)`` is ``(N, 2)`` and the
    non-target logits are ``(N, C − 1)``, the target column removed exactly (no −1000 offset)."""
    rows, classes = scaled.shape
    target = scaled[is_target]  # one per row, in row order
    others = scaled[~is_target].reshape(rows, classes - 1)
    log_total = torch.logsumexp(scaled, dim=-1)
    # log(1 − p_t) as a difference of logsumexps: no 1 − p_t cancellation when p_t ≈ 1.
    log_binary = torch.stack([target - log_total, torch.logsumexp(others, dim=-1) - log_total], dim=-1)
    return log_binary, others


@register(
    "dkd",
    title="Decoupled KD",
    paper="Zhao et al. CVPR 2022",
    knowledge="response",
    inputs="logits + labels",
    recipe="response_loss: dkd, response_options: {alpha: 1, beta: 8}, temperature: 4",
    order=2,
)
def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float | Tensor = 4.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Decoupled Knowledge Distillation of Zhao et al. (CVPR 2022), "Decoupled Knowledge Distillation".

    For each valid position with target class ``t``, ``p = softmax(z / T)`` for teacher and student:

    * ``b = (p_t, 1 − p_t)``, the binary target / non-target probabilities;
      ``TCKD = KL(b_T ‖ b_S)`` (target-class knowledge distillation);
    * ``p̂ = softmax`` over the non-target classes only (the target logit excluded exactly; the
      reference code, mdistiller's ``DKD.py``, subtracts 1000 from it, which agrees to ~e^−1000);
      ``NCKD = KL(p̂_T ‖ p̂_S)`` (non-target-class knowledge distillation);

    ::

        loss = T² · (α · TCKD + β · NCKD)

    then the mean over valid positions. Classical KD decomposes as (Eq. 3 of the paper)::

        KL(p_T ‖ p_S) = TCKD + (1 − p_t^T) · NCKD

    so KD is DKD with α = 1 and a β of ``1 − p_t^T`` that shrinks exactly where the teacher is
    confident; DKD decouples the two terms and weights NCKD by a constant β instead.

    Defaults are mdistiller's CIFAR-100 configuration (α = 1, β = 8, T = 4; some pairs there use
    β = 6; ImageNet uses α = 1, β = 0.5, T = 1). The paper also warms the DKD term up linearly over
    the first 20 of 240 epochs (1 epoch on ImageNet). That warm-up is not part of this function: give
    the recipe a weight schedule, e.g. ``kd_weight: {kind: linear, start: 0, end: 1, steps: N}`` with
    N the optimizer steps of 20 epochs.

    Computed in log space (``logsumexp`` / ``log_softmax``), so a probability that underflows gives
    no NaN.

    Args:
        student_logits, teacher_logits: ``(B, C)`` or ``(B, L, C)``, same shape, ``C ≥ 2``.
        labels: integer targets ``(B,)`` or ``(B, L)``; -100 (the Hugging Face ignore index) excludes a
            position like the mask does.
        alpha, beta: weights of TCKD and NCKD.
        temperature: ``T > 0``; a number or a tensor as in :func:`kd_loss`.
        mask: ``(B,)`` or ``(B, L)``; 0 excludes a position.
    """
    _check_logits(student_logits, teacher_logits, "dkd")
    _check_labels(labels, student_logits, "dkd")
    classes = student_logits.shape[-1]
    if classes < 2:
        raise ValueError(f"dkd: needs at least 2 classes (a target and a non-target), got logits {classes} wide")
    valid = labels != -100
    if mask is not None:
        valid = valid & check_mask(mask, labels.shape, "dkd")
    # Select before computing: padded logits (even NaN) and ignored labels never enter the loss.
    student, teacher, targets = student_logits[valid], teacher_logits[valid], labels[valid].long()
    _check_targets(targets, classes, "dkd")
    t = _select_temperature(temperature, student_logits, valid, "dkd")
    is_target = F.one_hot(targets, classes).bool()
    log_b_s, others_s = _target_split(student / t, is_target)
    log_b_t, others_t = _target_split(teacher / t, is_target)
    tckd = _kl_from_log_probs(log_b_t, log_b_s)
    nckd = _kl_from_log_probs(F.log_softmax(others_t, dim=-1), F.log_softmax(others_s, dim=-1))
    weight = t.squeeze(-1) ** 2 if isinstance(t, Tensor) else t**2
    return mean_or_zero((alpha * tckd + beta * nckd) * weight, student)


def _pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of matching rows: cosine of the centred rows, ``a·b / (‖a‖ ‖b‖ + eps)``.

    ``eps`` is added to the product of norms as in the official DIST code, so a constant row (zero
    variance) correlates 0 instead of dividing by zero.
    """
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


@register(
    "dist",
    title="DIST",
    paper="Huang et al. NeurIPS 2022",
    knowledge="response",
    inputs="logits",
    recipe="response_loss: dist, response_options: {beta: 1, gamma: 1}, temperature: 1",
    order=3,
)
def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """DIST of Huang et al. (NeurIPS 2022), "Knowledge Distillation from A Stronger Teacher".

    With ``Y_S = softmax(z_S / T)`` and ``Y_T = softmax(z_T / T)`` stacked over the valid positions
    (rows ``i``, classes ``j``) and ``ρ`` the Pearson correlation (eps 1e-8 as in the official
    ``dist_kd.py``)::

        inter = 1 − mean_i ρ(Y_S[i, :], Y_T[i, :])    (inter-class relation, per position)
        intra = 1 − mean_j ρ(Y_S[:, j], Y_T[:, j])    (intra-class relation, across positions)
        loss  = T² · (β · inter + γ · intra)

    Matching correlations instead of KL only asks the student to preserve the teacher's relative
    ranking of classes (and of positions per class), which the paper argues suits a much stronger
    teacher. The intra-class term compares positions of the batch with each other, so the loss is
    not a mean of per-position losses and needs more than one valid position to be informative (with
    one, every centred column is zero and ``intra`` is 1).

    Defaults are the paper's ImageNet setting (β = γ = 1, T = 1); for CIFAR-100 the authors used
    β = γ = 2 and T = 4.

    Args:
        student_logits, teacher_logits: ``(B, C)`` or ``(B, L, C)``, same shape.
        beta, gamma: weights of the inter- and intra-class terms.
        temperature: ``T > 0``, a number (one T for all positions, as the intra-class term mixes them).
        mask: ``(B,)`` or ``(B, L)``; 0 excludes a position.
    """
    _check_logits(student_logits, teacher_logits, "dist")
    if isinstance(temperature, Tensor) and temperature.numel() != 1:
        raise ValueError(
            f"dist: temperature must be a number, got a tensor of shape {tuple(temperature.shape)}; "
            "the intra-class term compares positions, so they share one temperature"
        )
    t = _select_temperature(float(temperature), student_logits, mask, "dist")
    student = select_positions(student_logits, mask, "dist")
    teacher = select_positions(teacher_logits, mask, "dist")
    if student.shape[0] == 0:  # the correlations of no rows would be NaN
        return student.sum() * 0.0
    y_s = F.softmax(student / t, dim=-1)
    y_t = F.softmax(teacher / t, dim=-1)
    inter = 1 - _pearson(y_s, y_t).mean()
    intra = 1 - _pearson(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return t**2 * (beta * inter + gamma * intra)
