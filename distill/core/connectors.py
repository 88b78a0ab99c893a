"""Connectors: small trainable modules that map a student feature onto the teacher feature's shape.

A student layer is usually narrower than the teacher layer it imitates, so feature losses
(FitNets' hint loss, hidden-state MSE) compare ``connector(student_feature)`` with the teacher's
feature. Connectors are sized from shapes observed on a probe batch, *including* the batch
dimension: ``(B, D)``, ``(B, L, D)``, ``(B, C, L)`` or ``(B, C, H, W)``. The modules built here never
depend on B.

A 3-D shape is ambiguous: a sequence of token vectors ``(B, L, D)`` (transformer hidden states) or a
channels-first 1-D feature map ``(B, C, L)`` (a Conv1d output). The kind decides: ``linear`` and
``mlp`` read 3-D features as ``(B, L, D)`` and map the last dimension ``D``; ``conv1x1`` reads them
as ``(B, C, L)`` and maps the channel dimension ``C``.

Kinds:

* ``identity`` — no parameters; only when the shapes already match.
* ``linear`` — ``nn.Linear(d_s, d_t)`` on the last dimension of 2-D ``(B, D)`` / 3-D ``(B, L, D)`` features.
* ``mlp`` — ``Linear(d_s, h) -> ReLU -> Linear(h, d_t)`` on the last dimension, ``h = hidden`` or
  ``max(d_s, d_t)``.
* ``conv1x1`` — for 4-D feature maps ``(B, C, H, W)``: ``Conv2d(c_s, c_t, 1, bias=False) ->
  BatchNorm2d(c_t)``, the regressor used by FitNets-style and torchdistill's feature distillation
  (the BN keeps the regressed maps at the scale of the teacher's normalised features). When the
  spatial sizes differ, an ``AdaptiveAvgPool2d`` to the teacher's ``(H, W)`` runs first (pooling
  before the pointwise conv is equivalent and cheaper); a smaller student map is repeated up to the
  teacher's size by the same adaptive pooling. For 3-D channels-first 1-D maps ``(B, C, L)`` the
  same with ``AdaptiveAvgPool1d(L_t) -> Conv1d -> BatchNorm1d``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from distill.names import unknown_name_message

CONNECTOR_KINDS = ("identity", "linear", "conv1x1", "mlp")


def _shapes(student_shape: Sequence[int], teacher_shape: Sequence[int]) -> str:
    """Both shapes, as every connector error names them."""
    return f"student shape {tuple(student_shape)}, teacher shape {tuple(teacher_shape)}"


def _check_last_dim_mappable(kind: str, student: tuple[int, ...], teacher: tuple[int, ...]) -> None:
    """linear/mlp act on the last dimension only, so everything before it must already agree."""
    if len(student) == 4 or len(teacher) == 4:
        raise ValueError(
            f"connector {kind!r} maps the last dimension of 2-D or 3-D features, but got 4-D feature maps "
            f"({_shapes(student, teacher)}); use connector 'conv1x1' for (B, C, H, W) features"
        )
    if len(student) not in (2, 3) or len(teacher) not in (2, 3):
        raise ValueError(
            f"connector {kind!r} needs 2-D (B, D) or 3-D (B, L, D) features; got {_shapes(student, teacher)}"
        )
    if student[:-1] != teacher[:-1]:
        raise ValueError(
            f"connector {kind!r} maps only the last dimension, but the leading dimensions differ "
            f"({_shapes(student, teacher)}); pick layers whose shapes agree except for the feature size. "
            f"{kind!r} reads 3-D features as sequences (B, L, D); for 1-D feature maps (B, C, L), "
            "channels first, use connector 'conv1x1'"
        )


class _Conv1x1Connector(nn.Sequential):
    """``[AdaptiveAvgPool ->] 1×1 Conv -> BatchNorm``, 2-D or 1-D; a named class so that ``repr`` reads well."""


def _conv1x1(student: tuple[int, ...], teacher: tuple[int, ...]) -> _Conv1x1Connector:
    """Pointwise conv + BN over the channel dimension of (B, C, H, W) or (B, C, L) maps."""
    if len(student) != len(teacher) or len(student) not in (3, 4):
        raise ValueError(
            f"connector 'conv1x1' needs channels-first feature maps of the same rank, 4-D (B, C, H, W) or "
            f"3-D (B, C, L), but got {_shapes(student, teacher)}; use connector 'linear' or 'mlp' for 2-D "
            "(B, D) features or 3-D sequences (B, L, D)"
        )
    if student[0] != teacher[0]:
        raise ValueError(f"connector 'conv1x1': the batch dimensions differ ({_shapes(student, teacher)})")
    c_s, c_t = student[1], teacher[1]
    one_d = len(student) == 3
    pool, conv, norm = (
        (nn.AdaptiveAvgPool1d, nn.Conv1d, nn.BatchNorm1d)
        if one_d
        else (nn.AdaptiveAvgPool2d, nn.Conv2d, nn.BatchNorm2d)
    )
    layers: list[nn.Module] = []
    if student[2:] != teacher[2:]:
        layers.append(pool(teacher[2] if one_d else teacher[2:]))
    # bias=False: the BatchNorm that follows has its own shift, a conv bias would be redundant.
    layers += [conv(c_s, c_t, kernel_size=1, bias=False), norm(c_t)]
    return _Conv1x1Connector(*layers)


def build_connector(
    kind: str,
    student_shape: Sequence[int],
    teacher_shape: Sequence[int],
    hidden: int | None = None,
) -> nn.Module:
    """Build a connector of ``kind`` mapping features of ``student_shape`` to ``teacher_shape``.

    Shapes include the batch dimension, as observed on a probe batch. Raises ``ValueError`` naming
    both shapes when ``kind`` cannot map one onto the other, and for an unknown ``kind``.
    ``hidden`` is the hidden width of the ``mlp`` kind and is rejected for the others.
    """
    if kind not in CONNECTOR_KINDS:
        raise ValueError(unknown_name_message("connector", kind, list(CONNECTOR_KINDS)))
    student, teacher = tuple(int(d) for d in student_shape), tuple(int(d) for d in teacher_shape)
    if hidden is not None and kind != "mlp":
        # Silently ignoring it would hide a recipe mistake (the user believes they sized something).
        raise ValueError(f"connector_hidden={hidden} only applies to connector 'mlp', not {kind!r}")
    if hidden is not None and hidden < 1:
        raise ValueError(f"connector_hidden must be at least 1, got {hidden}")

    if kind == "identity":
        if student != teacher:
            raise ValueError(
                f"connector 'identity' needs equal shapes, but got {_shapes(student, teacher)}; "
                "use connector 'linear' or 'mlp' (2-D (B, D) or 3-D (B, L, D) features) or 'conv1x1' "
                "(feature maps (B, C, H, W) or (B, C, L))"
            )
        return nn.Identity()

    if kind in ("linear", "mlp"):
        _check_last_dim_mappable(kind, student, teacher)
        d_s, d_t = student[-1], teacher[-1]
        if kind == "linear":
            return nn.Linear(d_s, d_t)
        width = hidden if hidden is not None else max(d_s, d_t)
        return nn.Sequential(nn.Linear(d_s, width), nn.ReLU(), nn.Linear(width, d_t))

    return _conv1x1(student, teacher)
