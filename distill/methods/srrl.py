"""SRRL: the student's features, translated, must work with the teacher's own frozen classifier."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.capture import resolve_module
from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.methods.layers import batch_norm, conv, spatial_dims


@register(
    "srrl",
    title="Softmax Regression Representation Learning",
    paper="Yang et al. ICLR 2021",
    knowledge="contrastive",
    inputs="penultimate embedding + teacher classifier",
    recipe="matches: [{student: flatten, teacher: flatten, loss: srrl, options: {teacher_head: head}}]",
    order=2,
)
class SRRLLoss(MethodLoss):
    """Yang, Martinez, Bulat & Tzimiropoulos, ICLR 2021, "Knowledge Distillation via Softmax Regression
    Representation Learning".

    Match the *penultimate* features (the input of the teacher's classifier, e.g. ``flatten``). A
    connector ``g`` (1×1 conv → BN → ReLU, as in the official code; Linear → BN → ReLU for vectors)
    maps the student feature to the teacher's width; the teacher's frozen classifier ``h_T``
    (module ``teacher_head``) then reads it::

        loss = fm_weight · MSE(g(f_S), f_T) + sr_weight · MSE(h_T(g(f_S)), z_T)

    where ``z_T`` are the teacher's logits. The first term is feature matching, the second the
    *softmax regression* term: the student's representation must yield the teacher's predictions
    through the teacher's own classifier. Defaults fm_weight = sr_weight = 1 (the paper weighs the
    two terms α, β and tunes them per setting). The classifier's weights stay frozen (it is part
    of the teacher) but gradients flow through it into ``g`` and the student.
    """

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        teacher_head: str = "head",
        fm_weight: float = 1.0,
        sr_weight: float = 1.0,
    ) -> None:
        super().__init__()
        dims = spatial_dims(teacher_shape)
        if spatial_dims(student_shape) != dims or student_shape[2:] != teacher_shape[2:]:
            raise ValueError(
                f"srrl: student shape {student_shape} and teacher shape {teacher_shape} must agree except in "
                "channels; match the penultimate features (e.g. 'flatten') of both models"
            )
        if context.teacher is None:
            raise ValueError("srrl needs the teacher, to reuse its classifier")
        head = resolve_module(context.teacher, teacher_head)
        # A list hides the frozen teacher layer from nn.Module registration: it must not become a
        # trainable or checkpointed part of the student.
        self._teacher_head: list[nn.Module] = [head]
        self.connector = nn.Sequential(
            conv(student_shape[1], teacher_shape[1], dims, bias=False), batch_norm(teacher_shape[1], dims), nn.ReLU()
        )
        self.fm_weight, self.sr_weight = fm_weight, sr_weight

    def forward(self, student: Tensor, teacher: Tensor, context: StepContext) -> Tensor:
        translated = self.connector(student)
        feature_term = F.mse_loss(translated, teacher)
        regression_term = F.mse_loss(self._teacher_head[0](translated), context.teacher_logits)
        return self.fm_weight * feature_term + self.sr_weight * regression_term
