"""Factor Transfer (FT): a paraphraser pre-trained on the teacher, a translator trained on the student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.methods.layers import batch_norm, conv, conv_transpose, pool_to, spatial_dims


def _block(layer: nn.Module, channels: int, dims: int) -> list[nn.Module]:
    return [layer, batch_norm(channels, dims), nn.LeakyReLU(0.1)]


def encoder(in_channels: int, factor_channels: int, dims: int) -> nn.Sequential:
    """Three 3×3 conv → BN → LeakyReLU(0.1) layers: in → in → factor → factor channels."""
    return nn.Sequential(
        *_block(conv(in_channels, in_channels, dims, 3), in_channels, dims),
        *_block(conv(in_channels, factor_channels, dims, 3), factor_channels, dims),
        *_block(conv(factor_channels, factor_channels, dims, 3), factor_channels, dims),
    )


def decoder(factor_channels: int, out_channels: int, dims: int) -> nn.Sequential:
    """The mirror of :func:`encoder` with transposed convolutions."""
    return nn.Sequential(
        *_block(conv_transpose(factor_channels, factor_channels, dims), factor_channels, dims),
        *_block(conv_transpose(factor_channels, out_channels, dims), out_channels, dims),
        *_block(conv_transpose(out_channels, out_channels, dims), out_channels, dims),
    )


def factor_distance(student_factor: Tensor, teacher_factor: Tensor, p: int = 1) -> Tensor:
    """``mean | F_S/‖F_S‖₂ − F_T/‖F_T‖₂ |^p`` with each factor flattened per example (FT's Eq. 4, p=1)."""
    s = F.normalize(student_factor.flatten(1), dim=1)
    t = F.normalize(teacher_factor.flatten(1), dim=1)
    return (s - t).abs().pow(p).mean()


@register(
    "ft",
    stage="both",
    pretrain_epochs=5,
    title="Factor Transfer",
    paper="Kim et al. NeurIPS 2018",
    knowledge="feature",
    inputs="last feature map (paraphraser stage)",
    recipe="matches: [{student: block3, teacher: block3, loss: ft, weight: 200}]",
    order=5,
)
class FactorTransferLoss(MethodLoss):
    """Kim, Park & Kwak, NeurIPS 2018, "Paraphrasing Complex Network: Network Compression via Factor Transfer".

    A *paraphraser* (conv encoder → factor with ``rate`` × the teacher's channels → conv decoder)
    is first trained as an auto-encoder of the teacher's feature map, ``‖x_T − P(x_T)‖²`` (the
    pre-training stage; the student does not run). It is then frozen, and a *translator* (an
    encoder on the student's map) learns to produce the same factors::

        loss = mean | F_S/‖F_S‖₂ − F_T/‖F_T‖₂ |^p,   F_T = encoder_P(x_T),  F_S = translator(x_S)

    Defaults follow RepDistiller and the paper: rate k = 0.5, p = 1, weight β = 200 at CIFAR scale
    (RepDistiller pre-trains the paraphraser for 30 of 240 epochs; 5 here, for short runs). Works on
    (B, C, L) and (B, C, H, W) maps and (B, D) vectors (Linear layers); a larger student map is
    average-pooled to the teacher's spatial size.
    """

    pretrain_needs_student = False

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        rate: float = 0.5,
        p: int = 1,
    ) -> None:
        super().__init__()
        dims = spatial_dims(teacher_shape)
        if spatial_dims(student_shape) != dims:
            raise ValueError(f"ft: student shape {student_shape} and teacher shape {teacher_shape} differ in rank")
        if not 0 < rate <= 4:
            raise ValueError(f"ft: rate must be in (0, 4], got {rate}")
        teacher_channels = teacher_shape[1]
        factor_channels = max(1, int(teacher_channels * rate))
        self.paraphraser_encoder = encoder(teacher_channels, factor_channels, dims)
        self.paraphraser_decoder = decoder(factor_channels, teacher_channels, dims)
        self.translator = encoder(student_shape[1], factor_channels, dims)
        self.p = p
        self.teacher_size = tuple(teacher_shape[2:])

    def pretrain_loss(self, student: Tensor | None, teacher: Tensor, context: StepContext) -> Tensor:
        """The paraphraser's reconstruction error of the teacher's features."""
        reconstruction = self.paraphraser_decoder(self.paraphraser_encoder(teacher))
        return F.mse_loss(reconstruction, teacher)

    def end_pretrain(self) -> None:
        for parameter in [*self.paraphraser_encoder.parameters(), *self.paraphraser_decoder.parameters()]:
            parameter.requires_grad_(False)

    def forward(self, student: Tensor, teacher: Tensor, context: StepContext) -> Tensor:
        self.paraphraser_encoder.eval()  # frozen: its BatchNorm statistics stay as pre-trained
        with torch.no_grad():
            teacher_factor = self.paraphraser_encoder(teacher)
        student_factor = self.translator(pool_to(student, self.teacher_size))
        return factor_distance(student_factor, teacher_factor, self.p)
