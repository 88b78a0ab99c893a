"""SRRL: the student's features, translated, must work with the teacher's own frozen classifier."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from distill.capture import resolve_module
from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.methods.layers import batch_norm, conv, spatial_dims

FORMS = ("official", "pooled_connector")


def spatial_mean(features: Tensor) -> Tensor:
    """``(B, C, ...)`` → ``(B, C)``: the mean over all positions (global average pooling); vectors unchanged."""
    return features.flatten(2).mean(dim=2) if features.dim() > 2 else features


def connector(in_channels: int, out_channels: int, dims: int) -> nn.Sequential:
    """The official ``transfer_conv``: 1×1 conv (no bias) → BN → ReLU; Linear → BN → ReLU when dims == 0.

    Initialised as the official code: conv weights ~ N(0, 2 / (k·k·out_channels)) with k = 1 (He, fan-out),
    BatchNorm weight 1 and bias 0.
    """
    layer = conv(in_channels, out_channels, dims, bias=False)
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / out_channels))
    norm = batch_norm(out_channels, dims)
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    return nn.Sequential(layer, norm, nn.ReLU())


@register(
    "srrl",
    title="Softmax Regression Representation Learning",
    paper="Yang et al. ICLR 2021",
    knowledge="contrastive",
    inputs="final feature map + teacher classifier",
    recipe="matches: [{student: block3, teacher: block3, loss: srrl, options: {teacher_head: head}}]",
    order=2,
)
class SRRLLoss(MethodLoss):
    """Yang, Martinez, Bulat & Tzimiropoulos, ICLR 2021, "Knowledge Distillation via Softmax Regression
    Representation Learning"; reference code: the authors' ``jingyang2017/KD_SRRL``
    (``train_imagenet_distillation.py``, ``distiller_zoo/AIN.py``).

    A connector ``g`` maps the student's features to the teacher's channel count, and the teacher's
    frozen classifier ``h_T`` (module ``teacher_head``) must read the result as it reads its own
    features. With ``m(·)`` the mean over all positions (global average pooling) and ``z_T`` the
    teacher's logits, ``options: {form: ...}`` chooses where the pooling happens:

    * ``official`` (default), the authors' code: match the *final feature maps* (the map the teacher's
      classifier pools, e.g. ``block3``). ``g`` = 1×1 conv (no bias) → BN → ReLU runs on the student's
      map, *before* pooling::

          loss = fm_weight · MSE(m(g(x_S)), m(x_T)) + sr_weight · MSE(h_T(m(g(x_S))), z_T)

      The feature term is the code's ``statm_loss`` (per-channel spatial means, squared gap averaged
      over channels and batch), the regression term its ``F.mse_loss(net_t(feat_s=g(x_S)), pred_t)``
      (the teacher's avgpool → fc on the connected map). The paper writes the second term as a
      softmax-regression loss; the code regresses the logits by MSE, and this follows the code.
    * ``pooled_connector``: the variant this library used before: pool first, then a Linear → BN → ReLU
      connector on the pooled vector::

          loss = fm_weight · MSE(g(m(x_S)), m(x_T)) + sr_weight · MSE(h_T(g(m(x_S))), z_T)

      It differs from ``official`` on maps because ``g`` ends in a ReLU: pooling and ``g`` do not commute.

    On ``(B, D)`` vectors (e.g. ``flatten``, the pooled penultimate embedding, or an MLP's last hidden
    layer) there are no positions to pool and both forms are the same computation; that is the
    documented path for models without a feature map. 3-D features are read as ``(B, C, L)`` maps,
    channels first, like the other methods here (Conv1d connector, mean over L); transformer states
    ``(B, L, D)`` should be matched as a pooled ``(B, D)`` vector instead. Student and teacher must
    have the same rank; their spatial sizes may differ (only the means are compared).

    Defaults fm_weight = sr_weight = 1, as the official code (``loss_stat + mse(logits)``, weight 1). The
    classifier's weights stay frozen (it is part of the teacher), but gradients flow through it into
    ``g`` and the student.
    """

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        teacher_head: str = "head",
        fm_weight: float = 1.0,
        sr_weight: float = 1.0,
        form: str = "official",
    ) -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"srrl: form must be one of {', '.join(map(repr, FORMS))}; got {form!r}")
        dims = spatial_dims(teacher_shape)
        if spatial_dims(student_shape) != dims:
            raise ValueError(
                f"srrl: student shape {student_shape} and teacher shape {teacher_shape} differ in rank; match "
                "the final feature maps (e.g. 'block3') or the pooled embeddings (e.g. 'flatten') of both models"
            )
        if context.teacher is None:
            raise ValueError("srrl needs the teacher, to reuse its classifier")
        head = resolve_module(context.teacher, teacher_head)
        teacher_channels = teacher_shape[1]
        if isinstance(head, nn.Linear) and head.in_features != teacher_channels:
            raise ValueError(
                f"srrl: teacher_head {teacher_head!r} reads {head.in_features} features, but the matched teacher "
                f"features have {teacher_channels} channels; match the layer whose spatial mean the classifier reads"
            )
        # A list hides the frozen teacher layer from nn.Module registration: it must not become a
        # trainable or checkpointed part of the student.
        self._teacher_head: list[nn.Module] = [head]
        self.form = form
        self.connector = connector(student_shape[1], teacher_channels, dims if form == "official" else 0)
        self.fm_weight, self.sr_weight = fm_weight, sr_weight

    def forward(self, student: Tensor, teacher: Tensor, context: StepContext) -> Tensor:
        if self.form == "official":
            translated = spatial_mean(self.connector(student))
        else:
            translated = self.connector(spatial_mean(student))
        feature_term = F.mse_loss(translated, spatial_mean(teacher))
        regression_term = F.mse_loss(self._teacher_head[0](translated), context.teacher_logits)
        return self.fm_weight * feature_term + self.sr_weight * regression_term
