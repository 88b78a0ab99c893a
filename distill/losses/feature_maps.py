"""Feature-map losses: the student imitates *where* and *how* the teacher's convolutional maps respond.

Shapes: ``(B, C, *spatial)`` with one or more spatial dims, e.g. ``(B, C, L)`` from a 1-D CNN or
``(B, C, H, W)`` from a 2-D one; the spatial dims are flattened to ``S`` positions. A ``(B, D)``
vector or a map with a single position (``S == 1``) raises: these losses compare spatial patterns.
Student and teacher must have the same batch size and number of spatial dims.

Spatial sizes: where a loss needs equal sizes (AT, NST, FSP's consecutive layers), a map larger than
the other along a dim is adaptive-average-pooled to the smaller size, as RepDistiller does for square
maps (there ``F.adaptive_avg_pool2d`` to the smaller height); each dim is pooled separately, which is
exactly adaptive average pooling in any number of dims. SAD interpolates the smaller map up instead
(see :func:`sad_loss`).

No masks: a feature map is one per-example tensor with nothing padded, so ``mask`` must stay None;
only FSP takes a ``(B, L)`` mask, for sequence features ``(B, L, D)`` (see :func:`fsp_loss`). The
teacher is not detached (the caller runs it under ``no_grad``). Reductions follow the reference code
(RepDistiller, ``HobbitLong/RepDistiller`` ``distiller_zoo/``), so its loss weights carry over; each
docstring names them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.masking import check_mask, mean_or_zero
from distill.losses.registry import register

SAD_VARIANTS = ("sum", "sum_p", "max_p")
_INTERPOLATION = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _check_map(tensor: Tensor, what: str, role: str) -> None:
    if tensor.dim() < 3 or math.prod(tensor.shape[2:]) < 2:
        raise ValueError(
            f"{what} needs feature maps (batch, channels, *spatial) from a convolutional layer, with more than "
            f"one spatial position; got {role} shape {tuple(tensor.shape)}"
        )


def _check_pair(student: Tensor, teacher: Tensor, mask: Tensor | None, what: str) -> None:
    if mask is not None:
        raise ValueError(
            f"{what} takes no mask (got mask shape {tuple(mask.shape)}): feature maps are per-example tensors "
            "with no padded positions"
        )
    _check_map(student, what, "student")
    _check_map(teacher, what, "teacher")
    if student.shape[0] != teacher.shape[0] or student.dim() != teacher.dim():
        raise ValueError(
            f"{what}: student shape {tuple(student.shape)} and teacher shape {tuple(teacher.shape)} need the same "
            "batch size and the same number of spatial dims"
        )


def _check_power(p: float, what: str, minimum: float = 0.0) -> None:
    if not (math.isfinite(p) and p > minimum):
        raise ValueError(f"{what}: p must be a finite number > {minimum:g}; got {p}")


def _adaptive_pool(x: Tensor, size: Sequence[int]) -> Tensor:
    """Adaptive average pooling of the spatial dims of ``x`` to ``size``, one dim at a time."""
    for offset, target in enumerate(size):
        dim = 2 + offset
        if x.shape[dim] == target:
            continue
        moved = x.movedim(dim, -1)
        pooled = F.adaptive_avg_pool1d(moved.reshape(-1, 1, moved.shape[-1]), target)
        x = pooled.reshape(*moved.shape[:-1], target).movedim(-1, dim)
    return x


def _pool_to_smaller(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pool whichever map is larger along each spatial dim down to the other's size."""
    size = [min(m, n) for m, n in zip(a.shape[2:], b.shape[2:], strict=True)]
    return _adaptive_pool(a, size), _adaptive_pool(b, size)


def _interpolate(g: Tensor, size: tuple[int, ...], mode: str) -> Tensor:
    """``g`` ``(B, *spatial)`` interpolated to ``size`` (``align_corners=False``); unchanged if already so."""
    if tuple(g.shape[1:]) == size:
        return g
    return F.interpolate(g.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def _attention(features: Tensor, p: float) -> Tensor:
    """AT's map: L2-normalised ``mean_c |F_c|^p`` over the flattened positions, ``(B, S)``."""
    return F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)


@register(
    "at",
    title="Attention Transfer",
    paper="Zagoruyko & Komodakis ICLR 2017",
    knowledge="feature",
    inputs="feature maps",
    recipe="matches: [{student: [block1, block2], teacher: [block1, block2], loss: at, weight: 1000}]",
    order=2,
)
def at_loss(student: Tensor, teacher: Tensor, p: float = 2.0, mask: Tensor | None = None) -> Tensor:
    """Attention Transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention").

    ``Q = normalize_L2(mean over channels of |F|^p)``, flattened over the spatial positions, and
    ``loss = mean over batch and positions of (Q_S − Q_T)²`` — RepDistiller's
    ``(at(f_s) − at(f_t)).pow(2).mean()`` (``distiller_zoo/AT.py``). The channel counts may differ;
    a larger map is pooled to the smaller size first. Invariant to positive scaling of either map.

    Reference defaults: ``p = 2``; weight β = 1000 per layer (RepDistiller ``-b 1000``, summed over
    its layers; the paper's "β = 10³ divided by the number of elements and the batch size" is this
    mean). RepDistiller writes ``f.pow(p)``, the same as ``|f|^p`` for even ``p``; the absolute value
    (the paper's definition) keeps odd or fractional ``p`` meaningful on negative activations.
    """
    _check_pair(student, teacher, mask, "at")
    _check_power(p, "at")
    s, t = _pool_to_smaller(student, teacher)
    return (_attention(s, p) - _attention(t, p)).pow(2).mean()


def sad_map(features: Tensor, variant: str = "sum_p", p: float = 2.0) -> Tensor:
    """Self-attention map of SAD's AT-GEN (Hou et al., ICCV 2019), ``(B, *spatial)``, before the softmax.

    Over the channels ``A_c`` of a ``(B, C, *spatial)`` map: ``"sum"``: ``Σ_c |A_c|``;
    ``"sum_p"``: ``Σ_c |A_c|^p``; ``"max_p"``: ``max_c |A_c|^p`` (``p > 1``; ``"sum"`` ignores ``p``).
    The paper uses ``"sum_p"`` with ``p = 2`` (G²_sum), the default.
    """
    if variant not in SAD_VARIANTS:
        raise ValueError(f"sad: unknown variant {variant!r}; known variants: {', '.join(SAD_VARIANTS)}")
    _check_map(features, "sad", "features")
    magnitude = features.abs()
    if variant == "sum":
        return magnitude.sum(dim=1)
    _check_power(p, f"sad variant {variant!r}", minimum=1.0)
    powered = magnitude.pow(p)
    return powered.sum(dim=1) if variant == "sum_p" else powered.amax(dim=1)


@register(
    "sad",
    title="Self-Attention Distillation maps",
    paper="Hou et al. ICCV 2019",
    knowledge="feature",
    inputs="feature maps",
    recipe="matches: [{student: block3, teacher: block3, loss: sad, weight: 0.1, options: {variant: sum_p}}]",
    order=3,
)
def sad_loss(
    student: Tensor, teacher: Tensor, variant: str = "sum_p", p: float = 2.0, mask: Tensor | None = None
) -> Tensor:
    """Self Attention Distillation (Hou et al., ICCV 2019, "Learning Lightweight Lane Detection CNNs by SAD").

    ``Ψ(F) = softmax over positions of G(F)``, with ``G`` = :func:`sad_map` (``variant``, ``p``), and
    ``loss = mean over batch and positions of (Ψ_S − Ψ_T)²`` (the paper's L2 loss; ``nn.MSELoss``
    in the ENet-SAD PyTorch port). In the paper the "teacher" is the next, deeper layer of the same
    network; here it is any target map (a teacher layer or a deeper student layer), channel counts
    may differ.

    Sizes: when they differ, the *smaller* map ``G`` is resized up to the larger map's grid *before*
    the softmax, by linear (1-D), bilinear (2-D) or trilinear (3-D) interpolation,
    ``align_corners=False`` — whichever of student and teacher is the smaller (``Ψ = Φ(B(G(A)))`` in
    the paper, where ``B`` upsamples the smaller, deeper map; the ENet-SAD PyTorch port's ``at_gen``
    upsamples the deeper map by ``nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)``).
    Each spatial dim goes to the larger of the two sizes, so a map larger along one dim and smaller
    along another is resized on both sides. Nothing is shrunk, unlike AT and NST, which pool down.

    Reference defaults: ``variant="sum_p"``, ``p = 2``; weight 0.1, the term added only after 40K
    training episodes of a model trained without it (ENet-SAD PyTorch port, ``scale_sad_distill``).
    """
    _check_pair(student, teacher, mask, "sad")
    g_s, g_t = sad_map(student, variant, p), sad_map(teacher, variant, p)
    if g_s.shape[1:] != g_t.shape[1:]:
        mode = _INTERPOLATION.get(g_s.dim() - 1)
        if mode is None:
            raise ValueError(
                f"sad: cannot resize between student shape {tuple(student.shape)} and teacher shape "
                f"{tuple(teacher.shape)}: interpolation covers 1 to 3 spatial dims; give both maps the same "
                "spatial size"
            )
        size = tuple(max(m, n) for m, n in zip(g_s.shape[1:], g_t.shape[1:], strict=True))
        g_s, g_t = (_interpolate(g, size, mode) for g in (g_s, g_t))
    psi_s = torch.softmax(g_s.flatten(1), dim=1)
    psi_t = torch.softmax(g_t.flatten(1), dim=1)
    return (psi_s - psi_t).pow(2).mean()


@register(
    "nst",
    title="Neuron Selectivity Transfer",
    paper="Huang & Wang 2017",
    knowledge="feature",
    inputs="feature maps",
    recipe="matches: [{student: block3, teacher: block3, loss: nst, weight: 50}]",
    order=4,
)
def nst_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Neuron Selectivity Transfer (Huang & Wang 2017, "Like What You Like"), polynomial-kernel MMD².

    Each channel's spatial activation vector is L2-normalised (``f_i``, one per channel), then per
    example ``MMD² = mean_ij k(t_i, t_j) + mean_ij k(s_i, s_j) − 2 mean_ij k(s_i, t_j)`` with
    ``k(x, y) = (xᵀy)²`` (degree 2, c = 0, the paper's best kernel), averaged over the batch — as
    RepDistiller's ``NSTLoss`` (``distiller_zoo/NST.py``, ``full_loss=True``). The channel counts may
    differ; the spatial sizes must agree, so a larger map is pooled to the smaller size first.

    Reference weight: β = 50 per layer (RepDistiller ``-b 50``). RepDistiller detaches the
    teacher-only term, a constant when the teacher is frozen; here nothing is detached.
    """
    _check_pair(student, teacher, mask, "nst")
    s, t = _pool_to_smaller(student, teacher)
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)

    def kernel_mean(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean(dim=(1, 2))

    return (kernel_mean(t, t) + kernel_mean(s, s) - 2.0 * kernel_mean(s, t)).mean()


def _fsp_matrices(layers: Sequence[Tensor], role: str) -> list[Tensor]:
    """``F1 · F2ᵀ / S`` for each consecutive pair of one model's layers, ``(B, C1, C2)``."""
    matrices = []
    for index, (first, second) in enumerate(itertools.pairwise(layers)):
        if first.shape[0] != second.shape[0] or first.dim() != second.dim():
            raise ValueError(
                f"fsp: {role} layers {index} and {index + 1} have shapes {tuple(first.shape)} and "
                f"{tuple(second.shape)}; consecutive layers need the same batch size and number of spatial dims"
            )
        a, b = _pool_to_smaller(first, second)
        a, b = a.flatten(2), b.flatten(2)
        matrices.append(a @ b.transpose(1, 2) / a.shape[-1])
    return matrices


def _fsp_sequence_matrices(layers: Sequence[Tensor], valid: Tensor, role: str) -> list[Tensor]:
    """``Σ over valid positions of f1 f2ᵀ / n_b`` for consecutive ``(B, L, D)`` layers, ``(B, D1, D2)``.

    Padded positions are set to zero with ``torch.where`` before the product (never multiplied by the
    mask: ``0 · inf = NaN``), so junk there reaches neither the value nor the gradient.
    """
    zero = torch.zeros((), dtype=layers[0].dtype, device=layers[0].device)
    clean = []
    for index, layer in enumerate(layers):
        if layer.dim() != 3:
            raise ValueError(
                f"fsp: with a (batch, length) mask the layers must be sequence features (batch, length, hidden); "
                f"got {role} layer {index} of shape {tuple(layer.shape)}"
            )
        check_mask(valid, layer.shape[:2], f"fsp {role} layer {index}")
        clean.append(torch.where(valid[..., None], layer, zero))
    count = valid.sum(dim=1).clamp_min(1).to(clean[0].dtype)[:, None, None]  # an empty example is dropped later
    return [a.transpose(1, 2) @ b / count for a, b in itertools.pairwise(clean)]


@register(
    "fsp",
    layer_lists=True,
    stage="pretrain",
    pretrain_epochs=5,
    title="Flow of Solution Procedure",
    paper="Yim et al. CVPR 2017",
    knowledge="relation",
    inputs="consecutive feature maps + connectors (stage)",
    recipe=(
        "matches: [{student: [block1, block2, block3], teacher: [block1, block2, block3], "
        "loss: fsp, connector: conv1x1}]"
    ),
    order=6,
)
def fsp_loss(student_layers: Sequence[Tensor], teacher_layers: Sequence[Tensor], mask: Tensor | None = None) -> Tensor:
    """Flow of Solution Procedure (Yim et al., CVPR 2017, "A Gift from Knowledge Distillation").

    Takes each model's *list* of feature maps (at least 2 layers, as many for both models). For
    each consecutive pair ``(F1, F2)`` of one model, the larger map is pooled to the smaller size and
    ``G = F1 · F2ᵀ / S``, shape ``(B, C1, C2)``; ``loss = Σ over pairs of mean (G_S − G_T)²`` — as
    RepDistiller's ``FSP`` (``distiller_zoo/FSP.py``, its ``(C2, C1)`` transpose gives the same value).
    Student and teacher may differ in spatial size but must have the same channels at each layer.

    Sequences: with a ``(B, L)`` 0/1 ``mask``, every layer is a sequence feature ``(B, L, D_i)`` (a
    hidden state; all layers share ``L`` and the mask) and, per example ``b`` with ``n_b`` valid
    positions, ``G_b = (1/n_b) Σ over valid positions l of f1(l) f2(l)ᵀ``, shape ``(D1, D2)`` — as
    TextBrewer's ``fsp_loss`` (``src/textbrewer/losses.py``: padded states zeroed, the product divided
    by the lengths), there for two layers, whose ``F.mse_loss`` is this mean. The mean runs over the
    examples with at least one valid position (none at all gives 0). Without a mask, a 3-D tensor is a
    1-D feature map ``(B, C, L)``; pass an all-ones mask for unpadded sequences.

    Stage: RepDistiller trains FSP only in its init stage (30 epochs on CIFAR-100, before the 240
    distillation epochs; init loss = the plain sum, weight 1), then distils with KD alone. The
    default pretrain stage here is 5 epochs, suited to short runs.
    """
    for role, layers in (("student", student_layers), ("teacher", teacher_layers)):
        if isinstance(layers, Tensor) or len(layers) < 2:
            got = f"a tensor of shape {tuple(layers.shape)}" if isinstance(layers, Tensor) else f"{len(layers)}"
            raise ValueError(f"fsp takes a list of at least 2 feature maps per model; got {got} for the {role}")
        if mask is None:
            for layer in layers:
                _check_map(layer, "fsp", role)
    if len(student_layers) != len(teacher_layers):
        raise ValueError(
            f"fsp: {len(student_layers)} student layers but {len(teacher_layers)} teacher layers; match them one to one"
        )
    if mask is None:
        grams_s, grams_t = _fsp_matrices(student_layers, "student"), _fsp_matrices(teacher_layers, "teacher")
    else:
        valid = mask.bool()
        grams_s = _fsp_sequence_matrices(student_layers, valid, "student")
        grams_t = _fsp_sequence_matrices(teacher_layers, valid, "teacher")
    channel_dim = 1 if mask is None else -1
    for index, (s, t) in enumerate(zip(student_layers, teacher_layers, strict=True)):
        if s.shape[0] != t.shape[0]:
            raise ValueError(
                f"fsp: layer {index} student shape {tuple(s.shape)} and teacher shape {tuple(t.shape)} have "
                "different batch sizes"
            )
        if s.shape[channel_dim] != t.shape[channel_dim]:
            what, fix = ("channels", "a conv1x1") if mask is None else ("hidden sizes", "a linear")
            raise ValueError(
                f"fsp: layer {index} student shape {tuple(s.shape)} and teacher shape {tuple(t.shape)} have different "
                f"{what}; put {fix} connector on the student layer to give it the teacher's {what}"
            )
    pairs = list(zip(grams_s, grams_t, strict=True))
    if mask is None:
        return torch.stack([(g_s - g_t).pow(2).mean() for g_s, g_t in pairs]).sum()
    present = valid.any(dim=1)  # examples with at least one valid position
    terms = [mean_or_zero((g_s - g_t)[present].pow(2), g_s) for g_s, g_t in pairs]
    return torch.stack(terms).sum()


@register(
    "ab",
    stage="pretrain",
    pretrain_epochs=5,
    title="Activation Boundaries",
    paper="Heo et al. AAAI 2019",
    knowledge="feature",
    inputs="pre-ReLU maps + connector (stage)",
    recipe="matches: [{student: block3.bn, teacher: block3.bn, loss: ab, connector: conv1x1}]",
    order=6,
)
def ab_loss(student: Tensor, teacher: Tensor, margin: float = 1.0, mask: Tensor | None = None) -> Tensor:
    """Activation Boundaries (Heo et al., AAAI 2019, "Knowledge Transfer via Distillation of AB").

    On *pre-ReLU* responses of equal shape (the caller puts a connector, e.g. conv1x1 + BN, on the
    student), per element ``(s + m)² · 1[s > −m and t ≤ 0] + (s − m)² · 1[s ≤ m and t > 0]``: the
    student must be off by a margin ``m`` wherever the teacher's neuron is off, and on where it is on.
    The elements are summed and divided by the batch size and by 1000, as RepDistiller's ``ABLoss``
    (``distiller_zoo/AB.py``): a sum over every element of a map is in the thousands, and the 1/1000
    scale brings it near the other terms.

    Reference defaults: ``m = 1``. RepDistiller also multiplies layer ``i`` of ``n`` by
    ``3 · 2^(i − n + 1)`` (the deepest layer weighs 3) — put that in the match weight. It trains AB
    only in its init stage (30 epochs on CIFAR-100, before 240 distillation epochs with KD alone), so
    this loss defaults to a pretrain stage of 5 epochs, suited to short runs.
    """
    _check_pair(student, teacher, mask, "ab")
    if student.shape != teacher.shape:
        raise ValueError(
            f"ab: student shape {tuple(student.shape)} != teacher shape {tuple(teacher.shape)}; put a connector "
            "(conv1x1) on the student's pre-ReLU map to give it the teacher's shape"
        )
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"ab: margin must be a finite number > 0; got {margin}")
    off = ((student > -margin) & (teacher <= 0)).to(student.dtype)
    on = ((student <= margin) & (teacher > 0)).to(student.dtype)
    per_element = (student + margin).pow(2) * off + (student - margin).pow(2) * on
    return per_element.sum() / (student.shape[0] * 1000.0)
