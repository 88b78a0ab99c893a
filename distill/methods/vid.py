"""Variational Information Distillation (VID): a Gaussian likelihood of the teacher's features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.methods.layers import conv, pool_to, spatial_dims


@register(
    "vid",
    title="Variational Information Distillation",
    paper="Ahn et al. CVPR 2019",
    knowledge="feature",
    inputs="feature maps",
    recipe="matches: [{student: [block1, block2], teacher: [block1, block2], loss: vid}]",
    order=7,
)
class VIDLoss(MethodLoss):
    """Ahn et al., CVPR 2019, "Variational Information Distillation for Knowledge Transfer".

    Maximises a variational lower bound of the mutual information between teacher features t and
    student features s by modelling ``q(t | s) = N(μ(s), σ²)`` with a learned mean regressor μ
    (1×1 conv → ReLU → 1×1 conv → ReLU → 1×1 conv, Linear layers for vectors) and a learned
    variance per channel, ``σ²_c = softplus(α_c) + ε``::

        loss = mean over batch, channels and positions of  ½ · ((t − μ(s))² / σ²_c + log σ²_c)

    (the negative log-likelihood up to a constant). Defaults are RepDistiller's (``distiller_zoo/VID.py``):
    hidden width = the teacher's channel count, initial variance ``init_pred_var`` 5.0, ε 1e-5, weight 1
    per layer, and a regressor of convolutions *without bias*.

    Sizes, as RepDistiller: when the maps differ, the *larger* one is average-pooled down to the smaller
    (a larger student map to the teacher's size, a larger teacher map to the student's). Upsampling the
    student instead would ask μ to predict detail that no student position carries: a variance term
    only the teacher has, which the learned σ² would absorb.
    """

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        hidden: int | None = None,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        dims = spatial_dims(teacher_shape)
        if spatial_dims(student_shape) != dims:
            raise ValueError(f"vid: student shape {student_shape} and teacher shape {teacher_shape} differ in rank")
        if init_pred_var <= eps:
            raise ValueError(f"vid: init_pred_var must exceed eps ({eps}), got {init_pred_var}")
        student_channels, teacher_channels = student_shape[1], teacher_shape[1]
        width = hidden or teacher_channels
        self.regressor = nn.Sequential(
            conv(student_channels, width, dims, bias=False),
            nn.ReLU(),
            conv(width, width, dims, bias=False),
            nn.ReLU(),
            conv(width, teacher_channels, dims, bias=False),
        )
        # softplus(α) + ε = init_pred_var at the start.
        self.log_scale = nn.Parameter(torch.full((teacher_channels,), math.log(math.expm1(init_pred_var - eps))))
        self.eps = eps

    def variance(self) -> Tensor:
        return F.softplus(self.log_scale) + self.eps

    def forward(self, student: Tensor, teacher: Tensor, context: StepContext) -> Tensor:
        size = [min(a, b) for a, b in zip(student.shape[2:], teacher.shape[2:], strict=True)]
        mean = self.regressor(pool_to(student, size))
        teacher = pool_to(teacher, size)
        variance = self.variance().view(1, -1, *([1] * (teacher.dim() - 2)))
        negative_log_likelihood = 0.5 * ((mean - teacher) ** 2 / variance + torch.log(variance))
        return negative_log_likelihood.mean()
