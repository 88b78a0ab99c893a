"""Distillation losses, each a plain function registered under a short name (``get("kd")``).

Importing this package imports every loss module, which is what registers the names.
"""

from __future__ import annotations

from distill.losses.attention import attention_kl_loss, attention_mse_loss
from distill.losses.feature import cosine_loss, hidden_mse_loss, hint_loss
from distill.losses.registry import UnknownLossError, get, names, register
from distill.losses.response import hard_ce_loss, kd_loss, logits_mse_loss, soft_ce_loss

__all__ = [
    "UnknownLossError",
    "attention_kl_loss",
    "attention_mse_loss",
    "cosine_loss",
    "get",
    "hard_ce_loss",
    "hidden_mse_loss",
    "hint_loss",
    "kd_loss",
    "logits_mse_loss",
    "names",
    "register",
    "soft_ce_loss",
]
