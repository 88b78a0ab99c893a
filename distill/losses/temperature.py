"""Dynamic temperature schedulers: a temperature per example (or token) from the current logits.

Both come from TextBrewer (``flsw_temperature_scheduler_builder`` / ``cwsm_temperature_scheduler_builder``
in its ``utils``), "adapted from arXiv:1911.07471" (Xu et al., "Dynamic Temperature Knowledge
Distillation"; the names are its focal-loss-style and confidence-weighted soft-max weightings). Each
returns ``base + (mean(w) − w) · beta`` for a per-position weight ``w``, so the temperatures average to
``base``; positions with a large ``w`` (hard ones) get a *lower* temperature, i.e. a sharper target.

They are computed without gradient (the temperature is a hyper-parameter, not a path for the loss)
and are not registered as losses: :func:`~distill.losses.response.kd_loss` and
:func:`~distill.losses.response.soft_ce_loss` take ``temperature_scheduler="flsw" | "cwsm"``.
Shapes: logits ``(B, C)`` or ``(B, L, C)``; the result has the positions' shape ``logits.shape[:-1]``.
With a mask over the positions, ``mean(w)`` is over valid positions only and padded positions get
``base`` (never read by the losses).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.losses.masking import check_mask

SCHEDULERS = ("constant", "flsw", "cwsm")
_CWSM_EPS = 1e-3  # TextBrewer's constant in w = 1 / (max p + 1e-3)


def _spread(w: Tensor, base_temperature: float, beta: float, mask: Tensor | None, what: str) -> Tensor:
    """``base + (mean(w) − w) · beta`` with the mean over valid positions; ``base`` at padded ones."""
    if mask is None:
        return base_temperature + (w.mean() - w) * beta
    valid = check_mask(mask, w.shape, what)
    mean = w[valid].mean() if bool(valid.any()) else torch.zeros((), dtype=w.dtype, device=w.device)
    # torch.where, not a product: w is NaN at a padded position filled with junk.
    base = torch.full((), base_temperature, dtype=w.dtype, device=w.device)
    return torch.where(valid, base_temperature + (mean - w) * beta, base)


@torch.no_grad()
def flsw_temperature(
    student_logits: Tensor,
    teacher_logits: Tensor,
    base_temperature: float,
    beta: float,
    gamma: float,
    eps: float = 1e-4,
    mask: Tensor | None = None,
) -> Tensor:
    """FLSW temperature: lower where student and teacher logits point in different directions.

    Per position, ``v = z_S / (‖z_S‖ + eps)``, ``t = z_T / (‖z_T‖ + eps)``::

        w   = (1 − Σ_c v_c t_c) ^ gamma
        tau = base + (mean(w) − w) · beta

    (TextBrewer's defaults: beta 1, gamma 2.) Returns ``logits.shape[:-1]``, without gradient.
    """
    v = student_logits / (student_logits.norm(dim=-1, keepdim=True) + eps)
    t = teacher_logits / (teacher_logits.norm(dim=-1, keepdim=True) + eps)
    w = (1 - (v * t).sum(-1)) ** gamma
    return _spread(w, float(base_temperature), beta, mask, "flsw_temperature")


@torch.no_grad()
def cwsm_temperature(
    student_logits: Tensor, base_temperature: float, beta: float, mask: Tensor | None = None
) -> Tensor:
    """CWSM temperature: lower where the student is unsure (a low top probability).

    Per position, ``p = softmax(z_S)``::

        w   = 1 / (max_c p_c + 1e-3)
        tau = base + (mean(w) − w) · beta

    Returns ``logits.shape[:-1]``, without gradient. The teacher is not used.
    """
    w = 1 / (student_logits.softmax(-1).amax(-1) + _CWSM_EPS)
    return _spread(w, float(base_temperature), beta, mask, "cwsm_temperature")


def scheduled_temperature(
    scheduler: str,
    temperature: float | Tensor,
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None,
    beta: float,
    gamma: float,
    what: str,
) -> float | Tensor:
    """The temperature a response loss should use: ``temperature`` itself for ``constant``, else the
    per-position temperature of the named scheduler around the base ``temperature``."""
    if scheduler not in SCHEDULERS:
        raise ValueError(f"{what}: unknown temperature_scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if scheduler == "constant":
        return temperature
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(
                f"{what}: temperature_scheduler {scheduler!r} needs a number as the base temperature, "
                f"got a tensor of shape {tuple(temperature.shape)}"
            )
        temperature = float(temperature)
    if scheduler == "flsw":
        tau = flsw_temperature(student_logits, teacher_logits, temperature, beta, gamma, mask=mask)
    else:
        tau = cwsm_temperature(student_logits, temperature, beta, mask=mask)
    _check_positive(tau, mask, scheduler, what)
    return tau


def _check_positive(tau: Tensor, mask: Tensor | None, scheduler: str, what: str) -> None:
    valid = tau if mask is None else tau[mask.bool()]
    if valid.numel() and not bool((valid > 0).all()):
        raise ValueError(
            f"{what}: temperature_scheduler {scheduler!r} gave a temperature {valid.min().item():.4g} <= 0 "
            "(base + (mean(w) − w) · beta); lower scheduler_beta or raise the base temperature"
        )
