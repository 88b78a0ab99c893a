"""Relation-based losses: the student imitates how the teacher relates the examples of a batch.

Features ``(B, ...)`` are flattened to one vector per example, ``(B, D_s)`` and ``(B, D_t)``. Only
relations *between examples* are compared, so ``D_s`` and ``D_t`` may differ (except for
``cc_loss(kernel="bilinear")``) and no connector is needed. A mask, if any, is per example ``(B,)``:
the valid rows are selected before anything is computed, so masked rows (even inf or NaN) never
reach the result or its gradient, and every batch statistic (mean distance, row normalisation,
``1/B²``) runs over the valid rows only.

Each loss needs at least two examples (RKD angle: three). A smaller batch raises; a mask that
leaves fewer valid rows gives zero (still attached to the graph): there is no relation to match.
Reductions follow the reference code, so its loss weights carry over; each docstring names them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask
from distill.losses.registry import register


def _examples(student: Tensor, teacher: Tensor, mask: Tensor | None, what: str, minimum: int) -> tuple[Tensor, Tensor]:
    """Student and teacher as ``(valid_examples, features)`` after checking batch size and mask."""
    for role, tensor in (("student", student), ("teacher", teacher)):
        if tensor.dim() < 2:
            raise ValueError(f"{what}: {role} features must be (batch, ...); got shape {tuple(tensor.shape)}")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} and teacher shape {tuple(teacher.shape)} have "
            "different batch sizes; relations are taken between the examples of one batch"
        )
    batch = student.shape[0]
    if batch < minimum:
        raise ValueError(
            f"{what} relates the examples of a batch and needs at least {minimum}; got batch size {batch} "
            f"(student shape {tuple(student.shape)}); use a larger batch, or drop_last=True for a short last batch"
        )
    s, t = student.reshape(batch, -1), teacher.reshape(batch, -1)
    if mask is None:
        return s, t
    if mask.dim() != 1:
        raise ValueError(
            f"{what}: mask has shape {tuple(mask.shape)} but relation losses take one flag per example, shape "
            f"({batch},); pool a (batch, length, dim) sequence to one vector per example first"
        )
    valid = check_mask(mask, student.shape[:1], what)
    return s[valid], t[valid]


def _no_relation(s: Tensor) -> Tensor:
    """Zero, attached to the graph, for a mask that leaves too few examples to relate."""
    return s.sum() * 0.0


def _pairwise_distances(x: Tensor) -> Tensor:
    """Euclidean distances between rows, ``(n, n)``; squared distances clamped at 1e-12 as in the reference."""
    squared = x.pow(2).sum(dim=1)
    return (squared[:, None] + squared[None, :] - 2.0 * x @ x.T).clamp(min=1e-12).sqrt()


@register(
    "rkd_distance",
    title="RKD distance",
    paper="Park et al. CVPR 2019",
    knowledge="relation",
    inputs="penultimate embedding",
    recipe="matches: [{student: flatten, teacher: flatten, loss: rkd_distance, weight: 25}]",
    order=1,
)
def rkd_distance_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """RKD distance loss (Park et al., CVPR 2019, "Relational Knowledge Distillation").

    ``ψ_D(i, j) = ||e_i − e_j||₂ / μ`` with ``μ`` the mean distance over the off-diagonal pairs
    ``i ≠ j`` of the same model, and ``loss = Σ_{i≠j} huber(ψ_D^S(i, j) − ψ_D^T(i, j)) / B²``,
    Huber with δ = 1 (``smooth_l1``). Dividing by ``B²`` (not ``B(B−1)``) is the reference's mean
    over the full ``B×B`` matrix, whose zero diagonal adds nothing (``lenscloth/RKD``
    ``metric/loss.py``, RepDistiller ``distiller_zoo/RKD.py``). Invariant to scaling and
    translating either model's features.

    Reference weights: 25 for distance and 50 for angle (RepDistiller ``RKDLoss(w_d=25, w_a=50)``;
    the paper uses λ_D = 1, λ_A = 2 for metric learning). Needs a batch of at least 2.
    """
    s, t = _examples(student, teacher, mask, "rkd_distance", 2)
    n = s.shape[0]
    if n < 2:
        return _no_relation(s)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
    d_s = _pairwise_distances(s)[off_diagonal]
    d_t = _pairwise_distances(t)[off_diagonal]
    return F.smooth_l1_loss(d_s / d_s.mean(), d_t / d_t.mean(), reduction="sum", beta=1.0) / n**2


def _angles(x: Tensor) -> Tensor:
    """``[j, i, k] = cos∠(e_i, e_j, e_k)``: the cosine at ``e_j`` between unit ``e_i − e_j`` and ``e_k − e_j``."""
    unit = F.normalize(x[None, :, :] - x[:, None, :], p=2, dim=2)  # [j, i] = (e_i − e_j) / ||e_i − e_j||
    return unit @ unit.transpose(1, 2)


@register(
    "rkd_angle",
    title="RKD angle",
    paper="Park et al. CVPR 2019",
    knowledge="relation",
    inputs="penultimate embedding",
    recipe="matches: [{student: flatten, teacher: flatten, loss: rkd_angle, weight: 50}]",
    order=2,
)
def rkd_angle_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """RKD angle loss (Park et al., CVPR 2019, "Relational Knowledge Distillation").

    ``ψ_A(i, j, k) = ⟨(e_i − e_j)/||e_i − e_j||, (e_k − e_j)/||e_k − e_j||⟩`` (cosine of the angle at
    ``e_j``) and ``loss = Σ huber(ψ_A^S − ψ_A^T) / B³`` over the triplets of distinct examples, Huber
    with δ = 1. Dividing by ``B³`` is the reference's mean over the full ``B×B×B`` tensor, whose
    degenerate triplets are equal (0 or 1) in both models. Memory ``O(B²·D + B³)``. Invariant to
    scaling and translating either model's features.

    Reference weight: 50 (RepDistiller ``RKDLoss(w_d=25, w_a=50)``). Needs a batch of at least 3.
    """
    s, t = _examples(student, teacher, mask, "rkd_angle", 3)
    n = s.shape[0]
    if n < 3:
        return _no_relation(s)
    index = torch.arange(n, device=s.device)
    j, i, k = index[:, None, None], index[None, :, None], index[None, None, :]
    distinct = (i != j) & (k != j) & (i != k)
    # Multiplying by the 0/1 mask instead of boolean indexing avoids a B³ gather and its scatter backward.
    difference = (_angles(s) - _angles(t)) * distinct
    return F.smooth_l1_loss(difference, torch.zeros_like(difference), reduction="sum", beta=1.0) / n**3


@register(
    "sp",
    title="Similarity-Preserving",
    paper="Tung & Mori ICCV 2019",
    knowledge="relation",
    inputs="last feature map",
    recipe="matches: [{student: block3, teacher: block3, loss: sp, weight: 3000}]",
    order=3,
)
def sp_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Similarity-preserving loss (Tung & Mori, ICCV 2019, "Similarity-Preserving Knowledge Distillation").

    ``G = normalize_rows(F Fᵀ)`` (``B×B``, each row scaled to unit L2 norm) for each model and
    ``loss = ||G_T − G_S||_F² / B²``, as in the paper and RepDistiller ``distiller_zoo/SP.py``
    (``sum of squares / (bsz * bsz)``).

    Reference weight: 3000 (RepDistiller ``-b 3000``, on the last block's feature map before pooling).
    """
    s, t = _examples(student, teacher, mask, "sp", 2)
    n = s.shape[0]
    if n < 2:
        return _no_relation(s)
    g_s = F.normalize(s @ s.T, p=2, dim=1)
    g_t = F.normalize(t @ t.T, p=2, dim=1)
    return (g_t - g_s).pow(2).sum() / n**2


def _taylor_rbf(x: Tensor, gamma: float, order: int) -> Tensor:
    """``Σ_{p≤order} e^{−2γ} (2γ)^p / p! · cos_ij^p``: ``exp(−γ||f_i − f_j||²)`` for unit ``f``, truncated."""
    unit = F.normalize(x, p=2, dim=1)
    cosine = unit @ unit.T
    kernel = torch.zeros_like(cosine)
    for p in range(order + 1):
        kernel = kernel + math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) * cosine.pow(p)
    return kernel


@register(
    "cc",
    title="Correlation Congruence",
    paper="Peng et al. ICCV 2019",
    knowledge="relation",
    inputs="penultimate embedding",
    recipe=(
        "matches: [{student: flatten, teacher: flatten, loss: cc, weight: 0.02, "
        "connector: linear, options: {kernel: bilinear}}]"
    ),
    order=4,
)
def cc_loss(
    student: Tensor,
    teacher: Tensor,
    mask: Tensor | None = None,
    gamma: float = 0.4,
    order: int = 2,
    kernel: Literal["gaussian_taylor", "bilinear"] = "gaussian_taylor",
) -> Tensor:
    """Correlation congruence (Peng et al., ICCV 2019, "Correlation Congruence for Knowledge Distillation").

    ``kernel="gaussian_taylor"`` (default, the paper's): each model's correlation matrix
    ``ψ_ij = k(f_i, f_j)`` with the Gaussian RBF ``k = exp(−γ||f_i − f_j||²)`` on L2-normalised
    embeddings, approximated by its order-``P`` Taylor expansion
    ``Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (f_iᵀ f_j)^p``, and ``loss = ||ψ_T − ψ_S||_F² / B²``. Defaults
    γ = 0.4, P = 2 as in AberHu/Knowledge-Distillation-Zoo ``kd_losses/cc.py`` (``--gamma 0.4
    --P_order 2``). ``D_s`` and ``D_t`` may differ: ``ψ`` is ``B×B``.

    ``kernel="bilinear"``: RepDistiller ``distiller_zoo/CC.py`` (the code the authors sent), with
    ``δ = |f_S − f_T|``: ``loss = mean over i < B−1 of δ_iᵀ δ_{i+1}``, consecutive examples only.
    It ignores ``gamma`` and ``order``, needs equal dimensions, and is not the paper's bilinear-pool
    kernel ``f_iᵀ f_j``. We default to the Gaussian form because it is the paper's equation; the
    bilinear form's weight (RepDistiller ``-b 0.02``, on trainable 128-d linear embeddings of both
    models) does not transfer to it.
    """
    if kernel not in ("gaussian_taylor", "bilinear"):
        raise ValueError(f"cc: kernel must be 'gaussian_taylor' or 'bilinear', got {kernel!r}")
    if kernel == "gaussian_taylor" and not gamma > 0:
        raise ValueError(f"cc: gamma must be > 0, got {gamma}")
    if kernel == "gaussian_taylor" and (isinstance(order, bool) or not isinstance(order, int) or order < 0):
        raise ValueError(f"cc: order must be an integer >= 0, got {order!r}")
    s, t = _examples(student, teacher, mask, "cc", 2)
    if kernel == "bilinear":
        if s.shape[1] != t.shape[1]:
            raise ValueError(
                f"cc (kernel='bilinear'): student shape {tuple(student.shape)} and teacher shape "
                f"{tuple(teacher.shape)} flatten to {s.shape[1]} != {t.shape[1]} features; add a connector "
                "(RepDistiller embeds both into 128-d with trainable linear heads) or use kernel='gaussian_taylor'"
            )
        if s.shape[0] < 2:
            return _no_relation(s)
        delta = (s - t).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()
    n = s.shape[0]
    if n < 2:
        return _no_relation(s)
    return (_taylor_rbf(t, gamma, order) - _taylor_rbf(s, gamma, order)).pow(2).sum() / n**2


def _conditional_probabilities(x: Tensor, eps: float) -> Tensor:
    """Row-normalised cosine kernel ``(cos + 1) / 2`` between rows; norms offset by ``eps`` as in the reference."""
    unit = x / (torch.linalg.vector_norm(x, dim=1, keepdim=True) + eps)
    similarity = (unit @ unit.T + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


@register(
    "pkt",
    title="Probabilistic Knowledge Transfer",
    paper="Passalis & Tefas ECCV 2018",
    knowledge="relation",
    inputs="penultimate embedding",
    recipe="matches: [{student: flatten, teacher: flatten, loss: pkt, weight: 30000}]",
    order=5,
)
def pkt_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, "Learning Deep Representations with
    Probabilistic Knowledge Transfer").

    Cosine kernel shifted to [0, 1], ``K_ij = (cos(f_i, f_j) + 1) / 2``, rows normalised into
    conditional probabilities ``p_ij = K_ij / Σ_k K_ik`` (diagonal included, as the authors' code),
    and ``loss = mean over all B² entries of p^T_ij · log((p^T_ij + ε) / (p^S_ij + ε))``: RepDistiller
    ``distiller_zoo/PKT.py`` (from the authors), i.e. the mean row KL divided by ``B``. Features are
    divided by ``||f|| + ε`` before the cosine, so an all-zero row is harmless.

    Reference weight: 30000 (RepDistiller ``-b 30000``, on the pooled penultimate features).
    """
    if not eps > 0:
        raise ValueError(f"pkt: eps must be > 0, got {eps}")
    s, t = _examples(student, teacher, mask, "pkt", 2)
    if s.shape[0] < 2:
        return _no_relation(s)
    p_s = _conditional_probabilities(s, eps)
    p_t = _conditional_probabilities(t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()
