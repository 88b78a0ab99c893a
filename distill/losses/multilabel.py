"""Multi-label classification: every class is its own yes/no decision (a sigmoid per class, not a softmax).

``hard_ce`` switches to :func:`multilabel_bce_loss` when the labels are 0/1 vectors shaped like the
logits; :func:`sigmoid_kd_loss` is Hinton's soft-target KD for such outputs.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask
from distill.losses.registry import register


def is_multi_label(logits: Tensor, labels: Tensor) -> bool:
    """Multi-label targets: 0/1 float vectors shaped like the logits (one sigmoid per class)."""
    return labels.is_floating_point() and tuple(labels.shape) == tuple(logits.shape)


def _rows(student_logits: Tensor, other: Tensor, mask: Tensor | None, what: str, labels: bool = False) -> Tensor:
    """The (B,) rows that count: logits must be (batch, classes) and ``other`` of the same shape; rows of
    ``labels`` set to -100 (hidden) and rows the mask zeroes are left out."""
    if student_logits.dim() != 2 or tuple(other.shape) != tuple(student_logits.shape):
        raise ValueError(
            f"{what}: expected (batch, classes) logits and targets of the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(other.shape)}"
        )
    valid = other[:, 0] != -100 if labels else other.new_ones(other.shape[0], dtype=bool)
    if mask is not None:
        valid = valid & check_mask(mask, student_logits.shape[:1], what)
    return valid


def multilabel_bce_loss(student_logits: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy per class, the mean over classes and labelled rows (``BCEWithLogitsLoss``,
    what ``transformers`` uses for ``problem_type="multi_label_classification"``)::

        loss = mean_{b, c} −[y_bc · log σ(z_bc) + (1 − y_bc) · log(1 − σ(z_bc))]

    A row whose labels are -100 (hidden: a transfer-set example) does not count; none left gives 0.
    """
    valid = _rows(student_logits, labels, mask, "multi-label hard loss", labels=True)
    logits, targets = student_logits[valid], labels[valid].to(student_logits.dtype)
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="mean")


# Registered without catalog metadata: the method zoo (README table, benchmarks/methods.py) compares
# single-label methods on one benchmark; this is KD for multi-label outputs, documented in the README.
@register("sigmoid_kd")
def sigmoid_kd_loss(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0, mask: Tensor | None = None
) -> Tensor:
    """Knowledge distillation for multi-label outputs: Hinton et al. (2015)'s soft targets at temperature
    T, with each class an independent Bernoulli variable instead of one softmax over classes.

    With ``p = σ(z_T / T)`` and ``q = σ(z_S / T)`` per class::

        loss = T² · mean_{b, c} [ p log(p / q) + (1 − p) log((1 − p) / (1 − q)) ]

    the binary KL divergence, scaled by T² as in the paper so that gradients keep their size as T
    grows. It is averaged over classes (not summed, as :func:`~distill.losses.response.kd_loss` sums
    over a softmax) so that it stands on the same scale as the hard multi-label loss, the mean
    binary cross-entropy over classes that ``transformers`` uses; ``kd_weight`` and ``hard_weight``
    then mean the same thing as for single-label KD. Logs are taken as ``logsigmoid`` (``log(1 − σ(x))
    = logsigmoid(−x)``), finite for any logit.

    Args:
        student_logits, teacher_logits: ``(B, C)``.
        temperature: ``T > 0``.
        mask: ``(B,)``; 0 excludes a row.
    """
    if temperature <= 0:
        raise ValueError(f"sigmoid_kd: temperature must be > 0, got {temperature}")
    valid = _rows(student_logits, teacher_logits, mask, "sigmoid_kd")
    student, teacher = student_logits[valid] / temperature, teacher_logits[valid] / temperature
    if student.numel() == 0:
        return student.sum() * 0.0
    p = teacher.sigmoid()
    log_p, log_not_p = F.logsigmoid(teacher), F.logsigmoid(-teacher)
    log_q, log_not_q = F.logsigmoid(student), F.logsigmoid(-student)
    kl = p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)
    return kl.mean() * temperature**2
