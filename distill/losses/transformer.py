"""Losses for transformer (BERT-family) distillation: attention, [CLS], token-similarity and value-relation
transfer.

Shapes follow Hugging Face: attention ``(B, heads, L, L)`` (query × key), hidden states
``(B, L, D)``, value vectors ``(B, heads, L, d_head)``; ``mask`` is the ``(B, L)`` padding mask. As in
:mod:`distill.losses.attention`, padded entries are removed by boolean selection / ``torch.where`` on
the *inputs* before anything is computed, never by multiplying with the mask (``0 · inf = NaN``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.attention import _MIN_PROBABILITY, _check_attention
from distill.losses.masking import check_mask, check_same_shape, mean_or_zero
from distill.losses.registry import register

# TinyBERT zeroes attention scores at or below this: BERT adds -10000 at padded keys.
_TINYBERT_MASKED_SCORE = -1e2


def _reject_scores(student_att: Tensor, teacher_att: Tensor, what: str) -> None:
    if bool((student_att < 0).any()) or bool((teacher_att < 0).any()):
        raise ValueError(
            f"{what}: attention has negative entries, so these are pre-softmax scores, not "
            "probabilities; pass softmax-ed attention (e.g. outputs.attentions) or use attention_mse"
        )


def _valid_rows(pairs: Tensor | None, per_row: Tensor, like: Tensor) -> Tensor:
    """Mean of ``per_row`` ``(B, heads, L)`` over the valid queries (all of them without a mask)."""
    if pairs is None:
        return per_row.mean()
    valid_queries = pairs.any(-1).expand_as(per_row)  # a query is valid iff it has a valid key
    return mean_or_zero(per_row[valid_queries], like)


@register("attention_ce")
def attention_ce_loss(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy between attention distributions (TextBrewer ``att_ce_loss``).

    For every valid query row: ``−Σ over valid keys of t · log s``, then the mean over heads × valid
    queries of the whole batch. ``s`` is clamped at 1e-12 before the log, as in
    :func:`~distill.losses.attention.attention_kl_loss`. This is that KL plus the teacher's entropy,
    which is constant for the student, so the student's gradient is the same.

    The inputs must be attention *probabilities* (e.g. Hugging Face ``outputs.attentions``); negative
    entries raise a ValueError. TextBrewer's ``att_ce_loss`` takes pre-softmax scores and applies the
    softmax itself; here, softmax the scores first.

    Shapes: ``(B, heads, L, L)``; ``mask`` ``(B, L)``.
    """
    pairs = _check_attention(student_att, teacher_att, mask, "attention_ce")
    s, t = student_att, teacher_att
    if pairs is not None:
        # Padded entries become t = 0, s = 1 (a zero term); torch.where passes them no gradient.
        s = torch.where(pairs, s, torch.ones((), dtype=s.dtype, device=s.device))
        t = torch.where(pairs, t, torch.zeros((), dtype=t.dtype, device=t.device))
    _reject_scores(s, t, "attention_ce")
    per_row = -(t * torch.log(s.clamp_min(_MIN_PROBABILITY))).sum(-1)  # (B, heads, L)
    return _valid_rows(pairs, per_row, s)


@register("attention_mse_tinybert")
def attention_mse_tinybert_loss(student_att: Tensor, teacher_att: Tensor, mask: Tensor | None = None) -> Tensor:
    """Attention-score MSE with TinyBERT's normalisation (Jiao et al. 2020, "TinyBERT"; Eq. 3).

    With a ``(B, L)`` mask: ``Σ over valid (b, h, q, k) of (s − t)² / (B · heads · L · L)`` — the
    squared differences of valid query×key pairs divided by *all* entries. TinyBERT's code adds
    -10000 at padded keys, zeroes scores ``<= -1e2`` and takes a plain ``MSELoss``, so padded entries
    add zero but still count in the denominator; the value therefore shrinks with the amount of
    padding. :func:`~distill.losses.attention.attention_mse_loss` (TextBrewer) instead divides by the
    number of valid pairs, ``heads · Σ_b n_b²``.

    One difference from TinyBERT's code: there, padded *queries* keep their real scores at valid
    keys and contribute; here every pair with a padded query or key is dropped (the scores of padding
    tokens are not worth imitating, and junk there must not matter).

    Without a mask, entries ``<= -1e2`` of each tensor are set to zero (TinyBERT's threshold), then
    the plain mean is taken.

    Shapes: ``(B, heads, L, L)``, pre-softmax scores (or probabilities), student and teacher alike.
    """
    pairs = _check_attention(student_att, teacher_att, mask, "attention_mse_tinybert")
    if pairs is None:
        zero = torch.zeros((), dtype=student_att.dtype, device=student_att.device)
        s = torch.where(student_att <= _TINYBERT_MASKED_SCORE, zero, student_att)
        t = torch.where(teacher_att <= _TINYBERT_MASKED_SCORE, zero, teacher_att)
        return ((s - t) ** 2).mean()
    pairs = pairs.expand_as(student_att)
    s, t = student_att[pairs], teacher_att[pairs]  # padded entries never reach the value or gradient
    return ((s - t) ** 2).sum() / student_att.numel()


def _cls_vectors(hidden: Tensor, what: str) -> Tensor:
    if hidden.dim() == 3:
        return hidden[:, 0]
    if hidden.dim() == 2:
        return hidden
    raise ValueError(
        f"{what}: hidden states must be (batch, length, hidden) or (batch, hidden); got shape {tuple(hidden.shape)}"
    )


@register("pkd")
def pkd_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """Patient Knowledge Distillation (Sun et al. 2019, "Patient Knowledge Distillation for BERT Model Compression").

    For one mapped student/teacher layer pair, with ``h`` the [CLS] hidden state (position 0)::

        loss = mean over the batch of ‖ h_S / ‖h_S‖₂ − h_T / ‖h_T‖₂ ‖₂²

    The paper's ``L_PT`` (Eq. 5) sums this over the layer pairs; register one match per pair. This is
    TextBrewer's ``pkd_loss``. The authors' code (``patience_loss``) takes ``F.mse_loss`` of the
    normalised vectors, i.e. additionally divides by the hidden size (and the number of layers);
    scale the match weight accordingly when porting their β (100–500).

    Vectors are normalised with ``F.normalize`` (norm clamped at 1e-12), so a zero vector gives 0, not
    NaN. Student and teacher hidden sizes must agree (add a connector otherwise).

    Shapes: ``(B, L, D)`` (position 0 is taken) or ``(B, D)`` (already the [CLS] vectors). ``mask``
    ``(B, L)`` is accepted for uniformity with the other losses and only checked: [CLS] is never padding.
    """
    check_same_shape(student_hidden, teacher_hidden, "pkd")
    s = _cls_vectors(student_hidden, "pkd")
    t = _cls_vectors(teacher_hidden, "pkd")
    if mask is not None and student_hidden.dim() == 3:
        check_mask(mask, student_hidden.shape[:2], "pkd")
    s, t = F.normalize(s, p=2.0, dim=-1), F.normalize(t, p=2.0, dim=-1)
    return ((s - t) ** 2).sum(-1).mean()


def _mmd_states(states: Tensor | Sequence[Tensor], role: str) -> tuple[Tensor, Tensor]:
    """One model's two ``(B, L, D)`` states; a single tensor (or a list of one) is that state twice."""
    if isinstance(states, Tensor):
        states = [states]
    if len(states) not in (1, 2):
        raise ValueError(f"mmd takes one hidden state or a list of two per model; got {len(states)} for the {role}")
    first, second = states[0], states[-1]
    for state in (first, second):
        if state.dim() != 3:
            raise ValueError(
                f"mmd: {role} hidden states must be (batch, length, hidden); got shape {tuple(state.shape)}"
            )
    if first.shape != second.shape:
        raise ValueError(
            f"mmd: the two {role} states have shapes {tuple(first.shape)} and {tuple(second.shape)}; "
            "they must agree (batch, length and hidden size)"
        )
    return first, second


@register("mmd")
def mmd_loss(
    student_hidden: Tensor | Sequence[Tensor], teacher_hidden: Tensor | Sequence[Tensor], mask: Tensor | None = None
) -> Tensor:
    """Token-similarity matching, TextBrewer's ``mmd_loss`` (a variant of NST, Huang & Wang 2017).

    For each model, from its states ``A, B`` of shape ``(B, L, D)`` (two layers, or one layer twice)::

        G = A · Bᵀ / D                        (B, L, L), normalised by that model's hidden size
        loss = mean over valid (b, i, j) of (G_S[b, i, j] − G_T[b, i, j])²

    where ``(i, j)`` is valid when both positions are (so the mean divides by ``Σ_b n_b²``), and
    without a mask the mean is over all ``B · L · L`` entries. Student and teacher hidden sizes may
    differ (each side has its own ``D``; no connector needed); ``B`` and ``L`` must agree.

    This follows the source, TextBrewer ``src/textbrewer/losses.py`` ``mmd_loss(state_S, state_T,
    mask)``, which takes lists of two states per model, ``gram = bmm(S_0, S_1ᵀ) / S_1.size(2)``, and
    with a mask ``(mse · mask_i · mask_j).sum() / Σ_b n_b²``. Its examples use one layer twice
    (``layer_S: [i, i]``); in a recipe here a match of one layer per side is that case and gets the
    padding mask, while the two-layer form is ``mmd_loss([s_a, s_b], [t_a, t_b], mask)`` from Python.
    Padded positions are zeroed with ``torch.where`` before the product and their pairs dropped,
    rather than multiplied by the mask as TextBrewer does, so junk there never reaches the result.

    Shapes: ``(B, L, D_S)`` and ``(B, L, D_T)`` (or lists of one or two such); ``mask`` ``(B, L)``.
    """
    s_first, s_second = _mmd_states(student_hidden, "student")
    t_first, t_second = _mmd_states(teacher_hidden, "teacher")
    if s_first.shape[:2] != t_first.shape[:2]:
        raise ValueError(
            f"mmd: student shape {tuple(s_first.shape)} and teacher shape {tuple(t_first.shape)} must agree in "
            "(batch, length); the hidden sizes may differ"
        )
    if mask is None:
        gram_s = s_first @ s_second.transpose(1, 2) / s_second.shape[-1]
        gram_t = t_first @ t_second.transpose(1, 2) / t_second.shape[-1]
        return ((gram_s - gram_t) ** 2).mean()
    valid = check_mask(mask, s_first.shape[:2], "mmd")
    zero = torch.zeros((), dtype=s_first.dtype, device=s_first.device)
    s_first, s_second, t_first, t_second = (
        torch.where(valid[..., None], state, zero) for state in (s_first, s_second, t_first, t_second)
    )
    gram_s = s_first @ s_second.transpose(1, 2) / s_second.shape[-1]
    gram_t = t_first @ t_second.transpose(1, 2) / t_second.shape[-1]
    pairs = valid[:, :, None] & valid[:, None, :]
    return mean_or_zero((gram_s - gram_t)[pairs] ** 2, gram_s)


def _check_values(student_values: Tensor, teacher_values: Tensor, what: str) -> None:
    for name, values in (("student", student_values), ("teacher", teacher_values)):
        if values.dim() != 4:
            raise ValueError(
                f"{what}: {name} values must be (batch, heads, length, head_dim); got shape {tuple(values.shape)}"
            )
    if student_values.shape[:3] != teacher_values.shape[:3]:
        raise ValueError(
            f"{what}: student values {tuple(student_values.shape)} and teacher values "
            f"{tuple(teacher_values.shape)} must agree in (batch, heads, length); MiniLM needs the same "
            "number of attention heads in both models (head_dim may differ)"
        )


def _value_log_relation(values: Tensor, valid: Tensor | None) -> Tensor:
    """``log softmax(V Vᵀ / √d_head)`` over keys ``(B, heads, L, L)``; padded keys are −inf before the softmax."""
    if valid is None:
        return F.log_softmax(values @ values.transpose(-1, -2) / math.sqrt(values.shape[-1]), dim=-1)
    # Zero the padded value vectors first: a junk (inf/NaN) vector would otherwise reach the gradient
    # of every valid row through the matrix product (0 · NaN = NaN).
    values = torch.where(valid[:, None, :, None], values, torch.zeros((), dtype=values.dtype, device=values.device))
    scores = values @ values.transpose(-1, -2) / math.sqrt(values.shape[-1])
    minus_inf = torch.full((), -math.inf, dtype=scores.dtype, device=scores.device)
    return F.log_softmax(torch.where(valid[:, None, None, :], scores, minus_inf), dim=-1)


def _row_kl(log_t: Tensor, log_s: Tensor, keys: Tensor | None) -> Tensor:
    """``Σ_k p_T (log p_T − log p_S)`` per row; padded keys (−inf logs) are replaced by 0 first, so
    that no −inf − (−inf) = NaN reaches the value or the backward pass (p_T is 0 there anyway)."""
    if keys is not None:
        keys = keys.expand_as(log_s)
        zero = torch.zeros((), dtype=log_s.dtype, device=log_s.device)
        log_s, log_t = torch.where(keys, log_s, zero), torch.where(keys, log_t, zero)
        return torch.where(keys, log_t.exp() * (log_t - log_s), zero).sum(-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


@register("value_relation")
def value_relation_loss(student_values: Tensor, teacher_values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Value-relation transfer of MiniLM (Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation").

    Per head, with ``V`` the ``(L, d_head)`` value vectors of the last layer::

        VR = softmax(V Vᵀ / √d_head)          (over keys; each side uses its own d_head)
        loss = mean over heads × valid queries of KL(VR_T[q] ‖ VR_S[q])

    (Eq. 7–8 of the paper). With a mask, padded keys are set to −inf in the scores *before* the
    softmax (so they get probability 0 and the valid keys renormalise) and padded queries are dropped.

    Shapes: ``(B, heads, L, d_head)`` for both; heads must be equal, ``d_head`` may differ. ``mask``
    ``(B, L)``.
    """
    _check_values(student_values, teacher_values, "value_relation")
    batch, _, length, _ = student_values.shape
    valid = None if mask is None else check_mask(mask, torch.Size((batch, length)), "value_relation")
    log_s = _value_log_relation(student_values, valid)
    log_t = _value_log_relation(teacher_values, valid)
    per_row = _row_kl(log_t, log_s, None if valid is None else valid[:, None, None, :])  # (B, heads, L)
    if valid is None:
        return per_row.mean()
    # per_row is finite everywhere (padded rows included), so it can anchor the zero of an empty mean.
    return mean_or_zero(per_row[valid[:, None, :].expand_as(per_row)], per_row)
