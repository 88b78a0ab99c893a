"""Attention-based losses: the student imitates the teacher's attention maps.

Shapes: ``(B, heads, L, L)`` (query × key), student and teacher alike; ``mask`` is the ``(B, L)``
padding mask. A query×key pair is valid when both positions are valid. Padded pairs are removed by
boolean selection / ``torch.where`` on the *inputs*, never by multiplying with the mask: with
``-inf`` padding scores ``0 · inf = NaN`` would poison both the loss and its gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.losses.masking import check_mask, check_same_shape, mean_or_zero
from distill.losses.registry import register

# Scores at or below this are treated as masked (-inf / -10000) when no mask is given (TextBrewer).
_MASKED_SCORE = -1e-3
_MIN_PROBABILITY = 1e-12


def _check_attention(student: Tensor, teacher: Tensor, mask: Tensor | None, what: str) -> Tensor | None:
    """Validate the shapes; return the ``(B, 1, L, L)`` valid-pair mask, or None without a mask."""
    check_same_shape(student, teacher, what)
    if student.dim() != 4:
        raise ValueError(f"{what}: attention must be (batch, heads, length, length); got shape {tuple(student.shape)}")
    if mask is None:
        return None
    batch, _, queries, keys = student.shape
    if queries != keys:
        raise ValueError(
            f"{what}: a (batch, length) mask needs square self-attention maps; got shape {tuple(student.shape)}"
        )
    valid = check_mask(mask, torch.Size((batch, keys)), what)
    return (valid[:, :, None] & valid[:, None, :])[:, None]


@register("attention_mse")
def attention_mse_loss(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error between attention scores (TinyBERT, Jiao et al. 2020; TextBrewer ``att_mse_loss``).

    With a ``(B, L)`` mask: ``Σ over valid (b, h, q, k) of (s − t)² / (heads · Σ_b n_b²)``, where
    ``n_b`` is the number of valid positions of example ``b`` — the mean over valid query×key pairs.

    Without a mask, entries ``<= -1e-3`` of each tensor are first set to zero (TextBrewer's convention
    for scores masked with -inf or -10000), then the plain mean is taken. That also zeroes genuinely
    negative scores, so pass the mask whenever there is one.

    Shapes: ``(B, heads, L, L)``, pre- or post-softmax, student and teacher alike.
    """
    pairs = _check_attention(student_att, teacher_att, mask, "attention_mse")
    if pairs is None:
        zero = torch.zeros((), dtype=student_att.dtype, device=student_att.device)
        s = torch.where(student_att <= _MASKED_SCORE, zero, student_att)
        t = torch.where(teacher_att <= _MASKED_SCORE, zero, teacher_att)
        return ((s - t) ** 2).mean()
    # Boolean selection: padded entries are dropped before the subtraction, so neither the value nor
    # the gradient ever sees them. The count of selected entries is exactly heads · Σ_b n_b².
    pairs = pairs.expand_as(student_att)
    s, t = student_att[pairs], teacher_att[pairs]
    return mean_or_zero((s - t) ** 2, s)


@register("attention_kl")
def attention_kl_loss(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None = None) -> Tensor:
    """KL divergence between attention distributions (MiniLM, Wang et al. 2020, self-attention transfer).

    For every valid query row: ``KL(t ‖ s) = Σ over valid keys of t·log t − t·log s``, then the mean
    over heads × valid queries of the whole batch. ``s`` is clamped at 1e-12 before the log and
    ``t·log t`` uses ``torch.xlogy`` so that 0·log 0 = 0.

    The inputs must be attention *probabilities* (rows sum to 1, e.g. Hugging Face
    ``outputs.attentions``), not pre-softmax scores: scores are not distributions and would give a
    meaningless value (negative entries raise a ValueError). Use :func:`attention_mse_loss` for scores.

    Shapes: ``(B, heads, L, L)``; ``mask`` ``(B, L)``.
    """
    pairs = _check_attention(student_att, teacher_att, mask, "attention_kl")
    s, t = student_att, teacher_att
    if pairs is not None:
        # Replace padded entries on the inputs (t → 0, s → 1 give a zero term) instead of multiplying
        # the result by the mask: torch.where passes no gradient to the discarded inf/NaN values.
        s = torch.where(pairs, s, torch.ones((), dtype=s.dtype, device=s.device))
        t = torch.where(pairs, t, torch.zeros((), dtype=t.dtype, device=t.device))
    if bool((s < 0).any()) or bool((t < 0).any()):
        raise ValueError(
            "attention_kl: attention has negative entries, so these are pre-softmax scores, not "
            "probabilities; pass softmax-ed attention (e.g. outputs.attentions) or use attention_mse"
        )
    # xlogy makes 0·log 0 = 0; its second argument is 1 where t = 0 so that a teacher that needs
    # gradients (online distillation) gets 0, not 0/0, at zero-probability keys.
    t_log_t = torch.xlogy(t, torch.where(t > 0, t, torch.ones((), dtype=t.dtype, device=t.device)))
    per_row = (t_log_t - t * torch.log(s.clamp_min(_MIN_PROBABILITY))).sum(-1)  # (B, heads, L)
    if pairs is None:
        return per_row.mean()
    valid_queries = pairs.any(-1).expand_as(per_row)  # a query is valid iff it has a valid key
    return mean_or_zero(per_row[valid_queries], s)
