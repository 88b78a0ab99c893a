"""Factor Transfer (FT): a paraphraser pre-trained on the teacher, a translator trained on the student."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.methods.layers import batch_norm, conv, conv_transpose, pool_to, spatial_dims


def _block(layer: nn.Module, channels: int, dims: int, norm: bool) -> list[nn.Module]:
    return [layer, *([batch_norm(channels, dims)] if norm else []), nn.LeakyReLU(0.1)]


def encoder(in_channels: int, factor_channels: int, dims: int, norm: bool = True) -> nn.Sequential:
    """Three 3×3 conv → [BN] → LeakyReLU(0.1) layers: in → in → factor → factor channels."""
    return nn.Sequential(
        *_block(conv(in_channels, in_channels, dims, 3), in_channels, dims, norm),
        *_block(conv(in_channels, factor_channels, dims, 3), factor_channels, dims, norm),
        *_block(conv(factor_channels, factor_channels, dims, 3), factor_channels, dims, norm),
    )


def decoder(factor_channels: int, out_channels: int, dims: int, norm: bool = True) -> nn.Sequential:
    """The mirror of :func:`encoder` with transposed convolutions."""
    return nn.Sequential(
        *_block(conv_transpose(factor_channels, factor_channels, dims), factor_channels, dims, norm),
        *_block(conv_transpose(factor_channels, out_channels, dims), out_channels, dims, norm),
        *_block(conv_transpose(out_channels, out_channels, dims), out_channels, dims, norm),
    )


REDUCTIONS = ("channel_mean_square", "paper")


def factor_vector(factor: Tensor, reduction: str) -> Tensor:
    """The L2-normalised vector a factor is compared by, ``(B, ·)``.

    ``"paper"``: the whole factor flattened (Eq. 4 of the paper); ``"channel_mean_square"``: first the
    channel mean of F², an H·W map per example (RepDistiller's ``FactorTransfer.factor``, ``p1 = 2``).
    """
    if reduction == "channel_mean_square" and factor.dim() > 2:
        factor = factor.pow(2).mean(dim=1)
    elif reduction == "channel_mean_square":
        factor = factor.pow(2)  # vectors have no positions: each feature is its own "map"
    return F.normalize(factor.flatten(1), dim=1)


def factor_distance(
    student_factor: Tensor, teacher_factor: Tensor, p: int = 1, reduction: str = "channel_mean_square"
) -> Tensor:
    """``mean | v_S − v_T |^p`` of the normalised factor vectors (:func:`factor_vector`), p = 1 by default.

    Spatial sizes may differ: the larger factor is average-pooled to the smaller first (RepDistiller).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"ft: unknown reduction {reduction!r}; use one of: {', '.join(REDUCTIONS)}")
    size = [min(a, b) for a, b in zip(student_factor.shape[2:], teacher_factor.shape[2:], strict=True)]
    s = factor_vector(pool_to(student_factor, size), reduction)
    t = factor_vector(pool_to(teacher_factor, size), reduction)
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

    Two reductions (``options: {reduction: ...}``). ``channel_mean_square`` (the default) is
    RepDistiller's ``distiller_zoo/FT.py``: each factor is first reduced to the channel mean of F², an
    H·W map, which is L2-normalised; RepDistiller's weight β = 200 (``-b 200``) belongs to this form and
    is the recipe example's weight. ``paper`` normalises the whole factor (Eq. 4 of the paper); its
    values are on another scale (a C·H·W vector instead of an H·W one), so β = 200 does not carry over.

    Defaults otherwise follow RepDistiller: rate k = 0.5, p = 1, a paraphraser *without* BatchNorm
    (``Paraphraser(use_bn=False)``; ``paraphraser_batch_norm: true`` adds it) and a translator with it
    (``Translator(use_bn=True)``); RepDistiller pre-trains the paraphraser for 30 of 240 epochs, 5
    here, for short runs. Works on (B, C, L) and (B, C, H, W) maps and (B, D) vectors (Linear
    layers); when the factors differ in size the larger is average-pooled to the smaller.
    """

    pretrain_needs_student = False

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        rate: float = 0.5,
        p: int = 1,
        reduction: str = "channel_mean_square",
        paraphraser_batch_norm: bool = False,
        translator_batch_norm: bool = True,
    ) -> None:
        super().__init__()
        dims = spatial_dims(teacher_shape)
        if spatial_dims(student_shape) != dims:
            raise ValueError(f"ft: student shape {student_shape} and teacher shape {teacher_shape} differ in rank")
        if not 0 < rate <= 4:
            raise ValueError(f"ft: rate must be in (0, 4], got {rate}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"ft: unknown reduction {reduction!r}; use one of: {', '.join(REDUCTIONS)}")
        teacher_channels = teacher_shape[1]
        factor_channels = max(1, int(teacher_channels * rate))
        self.paraphraser_encoder = encoder(teacher_channels, factor_channels, dims, paraphraser_batch_norm)
        self.paraphraser_decoder = decoder(factor_channels, teacher_channels, dims, paraphraser_batch_norm)
        self.translator = encoder(student_shape[1], factor_channels, dims, translator_batch_norm)
        self.p, self.reduction = p, reduction

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
        return factor_distance(self.translator(student), teacher_factor, self.p, self.reduction)
