"""Distillation losses, each a plain function registered under a short name (``get("kd")``).

Importing this package imports every loss module, which is what registers their names. The methods
with trainable parts (CRD, FT, SRRL, VID) live in ``distill.methods``, a layer above; the registry
imports them by module name on the first lookup (``get``, ``names``, ``info``), so this package
imports nothing above it and ``get("crd")`` still works.
"""

from __future__ import annotations

from distill.losses import transformer  # noqa: F401  (registers attention_ce, attention_mse_tinybert, pkd, ...)
from distill.losses.attention import attention_kl_loss, attention_mse_loss
from distill.losses.dkd_dist import dist_loss, dkd_loss
from distill.losses.feature import cosine_loss, hidden_mse_loss, hint_loss
from distill.losses.feature_maps import ab_loss, at_loss, fsp_loss, nst_loss, sad_loss
from distill.losses.registry import Knowledge, LossInfo, UnknownLossError, get, info, names, register, unregister
from distill.losses.relation import cc_loss, pkt_loss, rkd_angle_loss, rkd_distance_loss, sp_loss
from distill.losses.response import hard_ce_loss, kd_loss, logits_mse_loss, soft_ce_loss

__all__ = [
    "Knowledge",
    "LossInfo",
    "UnknownLossError",
    "ab_loss",
    "at_loss",
    "attention_kl_loss",
    "attention_mse_loss",
    "cc_loss",
    "cosine_loss",
    "dist_loss",
    "dkd_loss",
    "fsp_loss",
    "get",
    "hard_ce_loss",
    "hidden_mse_loss",
    "hint_loss",
    "info",
    "kd_loss",
    "logits_mse_loss",
    "names",
    "nst_loss",
    "pkt_loss",
    "register",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "sad_loss",
    "soft_ce_loss",
    "sp_loss",
    "unregister",
]
