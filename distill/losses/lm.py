"""Token-level distillation losses for causal language models, on dense teacher logits or a top-k teacher.

Shapes: logits are ``(B, L, V)`` (or ``(N, V)``); ``mask`` is ``(B, L)`` (or ``(N,)``), 0/1 or bool,
and marks the *scored* positions: padding and prompt positions are 0 and never reach the result or
its gradient (they are selected away first, :func:`distill.losses.masking.select_positions`). Every
loss is the sum over the vocabulary, then the **mean over scored tokens**; zero (still attached to
the graph) when no token is scored.

Temperature: both distributions are ``softmax(z / T)``. Unlike :func:`distill.losses.kd_loss`, no
``T²`` factor: language-model distillation runs at or near ``T = 1`` (TRL's GKD and DistillKit's
defaults), where the factor is 1; with ``T ≠ 1`` the gradient scale is left to the term's weight.

The teacher is either dense logits ``(..., V)`` or a :class:`TopKTeacher` (the k most probable
tokens' ids and log-probabilities, as the on-disk logit cache stores them). A top-k teacher is
completed to a full distribution before anything is computed, by one of two documented rules:

* ``tail="renormalize"``: the k probabilities are renormalised to sum to 1, every other token gets 0
  (DistillKit's choice). For losses that need ``log p_T`` where the student has mass (reverse KL),
  the student is then restricted to the same k tokens and renormalised too, or the loss would be
  infinite.
* ``tail="uniform"``: the k probabilities are kept and the remaining mass ``1 − Σ_k p`` is spread
  uniformly over the other ``V − k`` tokens (a full-support teacher; nothing is renormalised).

* ``tail="student"``: the remaining mass is spread over the other tokens in proportion to the student's
  own (detached) probabilities. Every f-divergence then equals its value on k + 1 bins, the top k and
  one "other tokens" bucket (MaxText's ``other_bucket``): forward KL gets the tail term
  ``r log(r / Q)`` with ``r``, ``Q`` the teacher's and the student's mass outside the top k. By the
  data-processing inequality this is a lower bound of the dense divergence, close to it when the two
  tails have a similar shape; the other two rules have no such guarantee (measured in
  ``benchmarks/lm_cache.py``).

With ``k = V`` every rule gives back the dense teacher exactly (tested to 1e-6). The temperature is
applied to the completed distribution: ``log_softmax(log p_T / T)``, which for ``renormalize`` is the
exact tempered teacher restricted to its top k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask, mean_or_zero
from distill.losses.registry import register

Tail = Literal["renormalize", "uniform", "student"]
TAILS: tuple[str, ...] = ("renormalize", "uniform", "student")


@dataclass(frozen=True)
class TopKTeacher:
    """The teacher's k most probable tokens per position: ``indices`` and ``log_probs``, both ``(..., k)``.

    ``log_probs`` are log-probabilities of the full softmax at temperature 1 (``log_softmax(z)``
    gathered at ``indices``), so ``1 − Σ exp(log_probs)`` is the mass of the other tokens.
    """

    indices: Tensor
    log_probs: Tensor
    tail: Tail = "renormalize"

    def __post_init__(self) -> None:
        if self.tail not in TAILS:
            raise ValueError(f"top-k teacher: unknown tail {self.tail!r}; use one of: {', '.join(TAILS)}")
        if self.indices.shape != self.log_probs.shape:
            raise ValueError(
                f"top-k teacher: indices shape {tuple(self.indices.shape)} != log_probs shape "
                f"{tuple(self.log_probs.shape)}; both are (..., k)"
            )

    @property
    def k(self) -> int:
        return self.indices.shape[-1]

    @classmethod
    def from_logits(cls, logits: Tensor, k: int, tail: Tail = "renormalize") -> TopKTeacher:
        """The top ``k`` of dense teacher logits ``(..., V)``, log-probabilities at temperature 1."""
        log_probs = F.log_softmax(at_least_float32(logits), dim=-1)
        values, indices = log_probs.topk(min(k, logits.shape[-1]), dim=-1)
        return cls(indices=indices, log_probs=values, tail=tail)

    def completed_log_probs(self, vocab_size: int, student_log_probs: Tensor | None = None) -> Tensor:
        """The full ``(..., V)`` log-probabilities this top-k stands for, by its tail rule (at T = 1).

        ``student_log_probs`` ``(..., V)`` shape the ``"student"`` tail (used without gradient)."""
        if self.k > vocab_size:
            raise ValueError(f"top-k teacher has k = {self.k} but the student's vocabulary has {vocab_size} tokens")
        log_probs = at_least_float32(self.log_probs)
        positions = (*log_probs.shape[:-1], vocab_size)
        if self.tail == "renormalize":
            log_probs = log_probs - torch.logsumexp(log_probs, dim=-1, keepdim=True)
            dense = torch.full(positions, -math.inf, dtype=log_probs.dtype, device=log_probs.device)
        elif self.tail == "student":
            if student_log_probs is None:
                raise ValueError("top-k teacher with tail 'student' needs the student's log-probabilities")
            shape = student_log_probs.detach().to(log_probs.dtype)
            outside = shape.scatter(-1, self.indices.long(), -math.inf)
            rest = (-torch.expm1(torch.logsumexp(log_probs, dim=-1, keepdim=True))).clamp_min(0.0)
            # log(r · q_j / Q): the teacher's residual r shaped like the student's tail (Q its mass there)
            dense = outside + torch.log(rest) - torch.logsumexp(outside, dim=-1, keepdim=True)
            # no tail left (a top k whose stored mass rounds to 1): -inf, never nan_to_num's default -3.4e38,
            # which reverse KL would weigh by the student's mass there (a loss of 1e34, then inf)
            dense = torch.where(torch.isnan(dense), -math.inf, dense)
        else:
            others = vocab_size - self.k
            rest = (-torch.expm1(torch.logsumexp(log_probs, dim=-1, keepdim=True))).clamp_min(0.0)
            # each other token's log-mass; -inf when there is no mass (or no token) to spread
            each = torch.log(rest / others) if others else torch.full_like(rest, -math.inf)
            dense = each.expand(positions).clone()
        return dense.scatter(-1, self.indices.long(), log_probs)


Teacher = Tensor | TopKTeacher


def at_least_float32(tensor: Tensor) -> Tensor:
    """bf16/fp16 logits are computed in float32 (their softmax over 50k tokens is too coarse); float64 stays."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _check_temperature(temperature: float, what: str) -> float:
    value = float(temperature)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what}: temperature must be a finite number above 0, got {temperature}")
    return value


def _scored(tensor: Tensor, mask: Tensor | None, what: str) -> Tensor:
    """``(..., X)`` → ``(scored positions, X)``."""
    if mask is None:
        return tensor.reshape(-1, tensor.shape[-1])
    return tensor[check_mask(mask, tensor.shape[:-1], what)]


def token_log_probs(
    student_logits: Tensor, teacher: Teacher, temperature: float, mask: Tensor | None, what: str
) -> tuple[Tensor, Tensor]:
    """Student and teacher log-probabilities at ``temperature`` for the scored positions, ``(N, V)`` each."""
    t = _check_temperature(temperature, what)
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            f"{what}: logits must be (batch, length, vocabulary) or (tokens, vocabulary); "
            f"got shape {tuple(student_logits.shape)}"
        )
    vocab = student_logits.shape[-1]
    if isinstance(teacher, TopKTeacher):
        if teacher.indices.shape[:-1] != student_logits.shape[:-1]:
            raise ValueError(
                f"{what}: top-k teacher positions {tuple(teacher.indices.shape[:-1])} != student positions "
                f"{tuple(student_logits.shape[:-1])}"
            )
        indices = _scored(teacher.indices, mask, what)
        top = TopKTeacher(indices, _scored(teacher.log_probs, mask, what), teacher.tail)
        shape = None
        if top.tail == "student":
            shape = F.log_softmax(at_least_float32(_scored(student_logits, mask, what)).detach(), dim=-1)
        teacher_scores = top.completed_log_probs(vocab, shape).to(student_logits.device)
    else:
        if teacher.shape != student_logits.shape:
            raise ValueError(
                f"{what}: student logits {tuple(student_logits.shape)} != teacher logits {tuple(teacher.shape)}; "
                "teacher and student need the same vocabulary (or a cross-tokenizer loss such as uld)"
            )
        teacher_scores = at_least_float32(_scored(teacher, mask, what))
    student = at_least_float32(_scored(student_logits, mask, what))
    return F.log_softmax(student / t, dim=-1), F.log_softmax(teacher_scores / t, dim=-1)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """``KL(p ‖ q) = Σ_v p (log p − log q)`` per row, counting only tokens with ``p > 0`` (0·log 0 = 0)."""
    p = log_p.exp()
    difference = torch.where(p > 0, log_p - log_q, torch.zeros((), dtype=log_p.dtype, device=log_p.device))
    return (p * difference).sum(-1)


def _zero_loss(log_s: Tensor) -> Tensor:
    """A zero that is still attached to the student's graph (only its scored positions: no NaN from padding)."""
    return log_s.sum() * 0.0


def _restricted_to_teacher(log_s: Tensor, log_t: Tensor) -> Tensor:
    """The student renormalised over the tokens where the teacher has mass (a top-k teacher's support)."""
    inside = torch.isfinite(log_t)
    if bool(inside.all()):
        return log_s
    kept = log_s.masked_fill(~inside, -math.inf)
    return kept - torch.logsumexp(kept, dim=-1, keepdim=True)


@register("forward_kl")
def forward_kl_loss(
    student_logits: Tensor, teacher_logits: Teacher, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Forward KL, ``KL(p_T ‖ p_S) = Σ_v p_T,v (log p_T,v − log p_S,v)``, mean over scored tokens.

    Word-level KD of Kim & Rush (EMNLP 2016, "Sequence-Level Knowledge Distillation") and Hinton et
    al. (2015) without the T² factor: mass-covering, the student spreads over all the teacher's modes.
    """
    log_s, log_t = token_log_probs(student_logits, teacher_logits, temperature, mask, "forward_kl")
    return mean_or_zero(_kl(log_t, log_s), log_s)


@register("reverse_kl")
def reverse_kl_loss(
    student_logits: Tensor, teacher_logits: Teacher, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Reverse KL, ``KL(p_S ‖ p_T) = Σ_v p_S,v (log p_S,v − log p_T,v)``, mean over scored tokens.

    MiniLLM (Gu et al., ICLR 2024) and GKD's β = 1: mode-seeking, the student concentrates on the
    teacher's large modes. With a renormalised top-k teacher the student is restricted to the same k
    tokens (see the module docstring).
    """
    log_s, log_t = token_log_probs(student_logits, teacher_logits, temperature, mask, "reverse_kl")
    return mean_or_zero(_kl(_restricted_to_teacher(log_s, log_t), log_t), log_s)


@register("tvd")
def tvd_loss(
    student_logits: Tensor, teacher_logits: Teacher, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Total variation distance, ``½ Σ_v |p_T,v − p_S,v|``, mean over scored tokens (in [0, 1]).

    As in DistiLLM's comparison of divergences (Ko et al., ICML 2024) and Wen et al. (ACL 2023, "f-Divergence
    Minimization for Sequence-Level KD"), where TVD is the symmetric, bounded member of the family.
    """
    log_s, log_t = token_log_probs(student_logits, teacher_logits, temperature, mask, "tvd")
    return mean_or_zero(0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1), log_s)


def _check_fraction(value: float, name: str, what: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what}: {name} must be in [0, 1], got {value}")
    return value


@register("skew_kl")
def skew_kl_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    alpha: float = 0.1,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Skew KL of DistiLLM (Ko et al., ICML 2024): ``KL(p_T ‖ α p_T + (1 − α) p_S)``, mean over scored tokens.

    The mixture keeps the divergence finite and its gradient bounded where the student gives a
    teacher token almost no mass; ``α = 0`` is forward KL, ``α = 1`` is 0. The paper's default α = 0.1.
    The mixture's log is formed as ``logaddexp(log α + log p_T, log(1 − α) + log p_S)``, never from
    probabilities, so it stays accurate where both are tiny.
    """
    alpha = _check_fraction(alpha, "alpha", "skew_kl")
    log_s, log_t = token_log_probs(student_logits, teacher_logits, temperature, mask, "skew_kl")
    if alpha == 1.0:
        return _zero_loss(log_s)
    log_mixture = log_s if alpha == 0.0 else torch.logaddexp(log_t + math.log(alpha), log_s + math.log1p(-alpha))
    return mean_or_zero(_kl(log_t, log_mixture), log_s)


def generalized_jsd(log_s: Tensor, log_t: Tensor, beta: float) -> Tensor:
    """``β KL(p_T ‖ m) + (1 − β) KL(p_S ‖ m)``, ``m = β p_T + (1 − β) p_S``, per row, for 0 < β < 1.

    Each log-ratio is computed from the *difference* ``d = log p_T − log p_S`` as one ``logaddexp``
    (``log(m / p_S) = logaddexp(log β + d, log(1 − β))``, ``log(m / p_T) = logaddexp(log β,
    log(1 − β) − d)``), never as ``log p − log m`` of two close numbers: near β = 0 or 1 the divergence
    is O(β²) and a plain difference would bury it in float32 rounding.
    """
    log_beta, log_rest = math.log(beta), math.log1p(-beta)
    difference = log_t - log_s
    student_over_mixture = -torch.logaddexp(difference + log_beta, torch.full_like(difference, log_rest))
    teacher_over_mixture = -torch.logaddexp(torch.full_like(difference, log_beta), log_rest - difference)
    zero = torch.zeros((), dtype=log_s.dtype, device=log_s.device)
    p_s, p_t = log_s.exp(), log_t.exp()
    kl_teacher = (p_t * torch.where(p_t > 0, teacher_over_mixture, zero)).sum(-1)
    kl_student = (p_s * torch.where(p_s > 0, student_over_mixture, zero)).sum(-1)
    return beta * kl_teacher + (1.0 - beta) * kl_student


@register("jsd")
def jsd_loss(
    student_logits: Tensor,
    teacher_logits: Teacher,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    normalize: bool = False,
) -> Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al., ICLR 2024, "On-Policy Distillation of LMs").

    ``JSD(β) = β KL(p_T ‖ m) + (1 − β) KL(p_S ‖ m)`` with ``m = β p_T + (1 − β) p_S``, mean over scored
    tokens. For 0 < β < 1 this is GKD's definition (and TRL's ``generalized_jsd_loss``); β = 0.5 is
    the symmetric JSD.

    Endpoints. Read as a formula, ``JSD(β) → 0`` at both ends (like ``β · KL(p_T ‖ p_S)`` as β → 0 and
    ``(1 − β) · KL(p_S ‖ p_T)`` as β → 1). GKD's implementations special-case the endpoints instead,
    returning forward KL at β = 0 and reverse KL at β = 1, so the loss *jumps* there. Here nothing is
    special-cased by default: ``normalize=False`` is the formula, 0 at both ends, continuous on [0, 1].
    ``normalize=True`` returns ``JSD(β) / (β (1 − β))``, whose limits are exactly forward KL at β → 0
    and reverse KL at β → 1; the endpoints are defined as those limits, so that loss too is continuous
    on the closed interval [0, 1] (tested numerically at β = 1e-4 and 1 − 1e-4), and it interpolates
    between the two KLs the way the special cases intended.
    """
    beta = _check_fraction(beta, "beta", "jsd")
    log_s, log_t = token_log_probs(student_logits, teacher_logits, temperature, mask, "jsd")
    if beta == 0.0 or beta == 1.0:
        if not normalize:
            return _zero_loss(log_s)
        per_token = _kl(log_t, log_s) if beta == 0.0 else _kl(_restricted_to_teacher(log_s, log_t), log_t)
        return mean_or_zero(per_token, log_s)
    per_token = generalized_jsd(log_s, log_t, beta)
    if normalize:
        per_token = per_token / (beta * (1.0 - beta))
    return mean_or_zero(per_token, log_s)
