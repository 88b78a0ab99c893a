"""Feature-map losses (AT, SAD, NST, FSP, AB) against hand-written numpy references with explicit loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.losses.feature_maps import ab_loss, at_loss, fsp_loss, nst_loss, sad_loss, sad_map
from distill.losses.registry import get, info

# ----------------------------------------------------------------- independent references (numpy, loops)


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy()


def _pool(x: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Adaptive average pooling: output cell i of a dim of length L averages [floor(iL/n), ceil((i+1)L/n))."""
    out = np.zeros(x.shape[:2] + tuple(size))
    for index in itertools.product(*(range(n) for n in size)):
        box = tuple(
            slice(math.floor(i * length / n), math.ceil((i + 1) * length / n))
            for i, length, n in zip(index, x.shape[2:], size, strict=True)
        )
        out[(slice(None), slice(None), *index)] = x[(slice(None), slice(None), *box)].mean(axis=tuple(range(2, x.ndim)))
    return out


def _to_smaller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    size = tuple(min(m, n) for m, n in zip(a.shape[2:], b.shape[2:], strict=True))
    return _pool(a, size), _pool(b, size)


def _at_reference(student, teacher, p=2.0) -> float:
    s, t = _to_smaller(_np(student), _np(teacher))
    total, count = 0.0, 0
    for b in range(s.shape[0]):
        q = []
        for x in (s[b].reshape(s.shape[1], -1), t[b].reshape(t.shape[1], -1)):
            raw = [sum(abs(x[c, pos]) ** p for c in range(x.shape[0])) / x.shape[0] for pos in range(x.shape[1])]
            norm = math.sqrt(sum(v * v for v in raw))
            q.append([v / norm for v in raw])
        for qs, qt in zip(*q, strict=True):
            total += (qs - qt) ** 2
            count += 1
    return total / count


def _nst_reference(student, teacher) -> float:
    s, t = _to_smaller(_np(student), _np(teacher))
    per_example = []
    for b in range(s.shape[0]):
        fs = [row / np.sqrt((row**2).sum()) for row in s[b].reshape(s.shape[1], -1)]
        ft = [row / np.sqrt((row**2).sum()) for row in t[b].reshape(t.shape[1], -1)]

        def k_mean(xs, ys):
            return sum(float(x @ y) ** 2 for x in xs for y in ys) / (len(xs) * len(ys))

        per_example.append(k_mean(ft, ft) + k_mean(fs, fs) - 2 * k_mean(fs, ft))
    return sum(per_example) / len(per_example)


def _sad_map_reference(x: np.ndarray, variant: str, p: float) -> np.ndarray:
    out = np.zeros((x.shape[0], *x.shape[2:]))
    for b in range(x.shape[0]):
        for pos in itertools.product(*(range(n) for n in x.shape[2:])):
            values = [abs(x[(b, c, *pos)]) for c in range(x.shape[1])]
            if variant == "sum":
                out[(b, *pos)] = sum(values)
            elif variant == "sum_p":
                out[(b, *pos)] = sum(v**p for v in values)
            else:
                out[(b, *pos)] = max(v**p for v in values)
    return out


def _resize_1d(x: np.ndarray, axis: int, n: int) -> np.ndarray:
    """Linear interpolation with align_corners=False: source = (i + 0.5)·L/n − 0.5, clamped at 0."""
    length = x.shape[axis]
    moved = np.moveaxis(x, axis, -1)
    out = np.zeros((*moved.shape[:-1], n))
    for i in range(n):
        source = max((i + 0.5) * length / n - 0.5, 0.0)
        lo = math.floor(source)
        hi = min(lo + 1, length - 1)
        w = source - lo
        out[..., i] = (1 - w) * moved[..., lo] + w * moved[..., hi]
    return np.moveaxis(out, -1, axis)


def _sad_reference(student, teacher, variant="sum_p", p=2.0) -> float:
    g_s = _sad_map_reference(_np(student), variant, p)
    g_t = _sad_map_reference(_np(teacher), variant, p)
    # The smaller map goes up to the larger along each dim; bilinear = linear along each dim in turn.
    for axis, (m, n) in enumerate(zip(g_s.shape[1:], g_t.shape[1:], strict=True), start=1):
        g_s, g_t = _resize_1d(g_s, axis, max(m, n)), _resize_1d(g_t, axis, max(m, n))
    total = 0.0
    for b in range(g_s.shape[0]):
        e_s, e_t = np.exp(g_s[b].ravel() - g_s[b].max()), np.exp(g_t[b].ravel() - g_t[b].max())
        total += sum((x - y) ** 2 for x, y in zip(e_s / e_s.sum(), e_t / e_t.sum(), strict=True)) / e_s.size
    return total / g_s.shape[0]


def _fsp_reference(student_layers, teacher_layers) -> float:
    total = 0.0
    for i in range(len(student_layers) - 1):
        grams = []
        for layers in (student_layers, teacher_layers):
            a, b = _to_smaller(_np(layers[i]), _np(layers[i + 1]))
            a, b = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
            g = np.zeros((a.shape[0], a.shape[1], b.shape[1]))
            for n, c1, c2 in itertools.product(range(a.shape[0]), range(a.shape[1]), range(b.shape[1])):
                g[n, c1, c2] = sum(a[n, c1, s] * b[n, c2, s] for s in range(a.shape[2])) / a.shape[2]
            grams.append(g)
        total += float(((grams[0] - grams[1]) ** 2).mean())
    return total


def _ab_reference(student, teacher, margin=1.0) -> float:
    total = 0.0
    for s, t in zip(_np(student).ravel(), _np(teacher).ravel(), strict=True):
        if s > -margin and t <= 0:
            total += (s + margin) ** 2
        if s <= margin and t > 0:
            total += (s - margin) ** 2
    return total / student.shape[0] / 1000


def _map(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64)


# (student shape, teacher shape): 1-D and 2-D, different channels, pooling either way, non-divisible sizes
PAIRS = [
    ((2, 3, 6), (2, 5, 6)),
    ((2, 3, 7), (2, 4, 3)),
    ((2, 4, 4, 4), (2, 6, 4, 4)),
    ((2, 3, 5, 6), (2, 2, 3, 4)),
    ((2, 3, 2, 3), (2, 5, 4, 5)),
]

# ----------------------------------------------------------------- values


@pytest.mark.parametrize(("s_shape", "t_shape"), PAIRS)
def test_at_and_nst_match_reference(s_shape, t_shape) -> None:
    student, teacher = _map(*s_shape), _map(*t_shape)
    assert at_loss(student, teacher).item() == pytest.approx(_at_reference(student, teacher), rel=1e-10)
    assert at_loss(student, teacher, p=3.0).item() == pytest.approx(_at_reference(student, teacher, 3.0), rel=1e-10)
    assert nst_loss(student, teacher).item() == pytest.approx(_nst_reference(student, teacher), rel=1e-9)


@pytest.mark.parametrize("variant", ["sum", "sum_p", "max_p"])
@pytest.mark.parametrize(("s_shape", "t_shape"), PAIRS)
def test_sad_matches_reference(variant: str, s_shape, t_shape) -> None:
    student, teacher = _map(*s_shape) * 0.5, _map(*t_shape) * 0.5
    expected = _sad_reference(student, teacher, variant, 3.0)
    assert sad_loss(student, teacher, variant=variant, p=3.0).item() == pytest.approx(expected, rel=1e-9)


def test_sad_upsamples_the_smaller_map_in_either_direction_by_hand() -> None:
    # Linear 2 -> 4 with align_corners=False: output i samples the input at i/2 − 1/4, clamped to [0, 1].
    w = [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    small_1d, large_1d = [1.0, -2.0], [0.5, -1.0, 3.0, 0.0]  # one channel, variant "sum": G = |A|
    up_1d = [sum(w[i][a] * abs(small_1d[a]) for a in range(2)) for i in range(4)]  # 1, 1.25, 1.75, 2
    small_2d = [[1.0, -2.0], [0.5, 3.0]]
    large_2d = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.25, -0.5, 1.0], [0.0, 2.5, 1.0, -1.5], [1.0, 0.5, -2.0, 0.75]]
    up_2d = [
        sum(w[i][a] * w[j][b] * abs(small_2d[a][b]) for a in range(2) for b in range(2))
        for i in range(4)
        for j in range(4)
    ]
    for small, large, up in ((small_1d, large_1d, up_1d), (small_2d, large_2d, up_2d)):
        flat = large if isinstance(large[0], float) else [v for row in large for v in row]
        e_up, e_large = [math.exp(v) for v in up], [math.exp(abs(v)) for v in flat]
        expected = sum((a / sum(e_up) - b / sum(e_large)) ** 2 for a, b in zip(e_up, e_large, strict=True)) / len(up)
        small_t, large_t = (torch.tensor([[x]], dtype=torch.float64) for x in (small, large))
        assert sad_loss(large_t, small_t, variant="sum").item() == pytest.approx(expected, rel=1e-12)  # teacher smaller
        assert sad_loss(small_t, large_t, variant="sum").item() == pytest.approx(expected, rel=1e-12)  # student smaller


@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 3, 4, 2), (2, 2, 2, 5)), ((2, 2, 3, 6, 2), (2, 3, 5, 3, 2))])
def test_sad_resizes_each_dim_to_the_larger_size(s_shape, t_shape) -> None:
    student, teacher = _map(*s_shape) * 0.5, _map(*t_shape) * 0.5
    expected = _sad_reference(student, teacher, "sum_p", 2.0)
    assert sad_loss(student, teacher).item() == pytest.approx(expected, rel=1e-9)


def test_sad_map_by_hand() -> None:
    features = torch.tensor([[[1.0, -2.0], [-3.0, 0.5]]])  # (1, 2 channels, 2 positions)
    assert sad_map(features, "sum").tolist() == [[4.0, 2.5]]
    assert sad_map(features, "sum_p", p=2.0).tolist() == [[10.0, 4.25]]
    assert sad_map(features, "max_p", p=2.0).tolist() == [[9.0, 4.0]]


@pytest.mark.parametrize(
    "shapes",
    [
        ([(2, 3, 8), (2, 4, 4), (2, 2, 3)], [(2, 3, 6), (2, 4, 6), (2, 2, 2)]),
        ([(2, 2, 4, 4), (2, 3, 2, 2), (2, 3, 3, 3)], [(2, 2, 3, 3), (2, 3, 3, 3), (2, 3, 2, 2)]),
    ],
)
def test_fsp_matches_reference(shapes) -> None:
    student = [_map(*shape) for shape in shapes[0]]
    teacher = [_map(*shape) for shape in shapes[1]]
    assert fsp_loss(student, teacher).item() == pytest.approx(_fsp_reference(student, teacher), rel=1e-10)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5)])
def test_ab_matches_reference(shape) -> None:
    student, teacher = _map(*shape) * 1.5, _map(*shape)
    assert ab_loss(student, teacher).item() == pytest.approx(_ab_reference(student, teacher), rel=1e-10)
    expected = _ab_reference(student, teacher, 0.5)
    assert ab_loss(student, teacher, margin=0.5).item() == pytest.approx(expected, rel=1e-10)


def test_three_spatial_dims_pool_like_torch() -> None:
    student, teacher = _map(2, 3, 4, 6, 5), _map(2, 2, 3, 4, 5)
    pooled = F.adaptive_avg_pool3d(student, (3, 4, 5))
    assert at_loss(student, teacher).item() == pytest.approx(at_loss(pooled, teacher).item(), rel=1e-12)
    assert nst_loss(student, teacher).item() == pytest.approx(nst_loss(pooled, teacher).item(), rel=1e-12)


# ----------------------------------------------------------------- properties


@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5)])
def test_identical_maps_give_zero(shape) -> None:
    features = _map(*shape)
    assert at_loss(features, features.clone()).item() == pytest.approx(0.0, abs=1e-15)
    assert nst_loss(features, features.clone()).item() == pytest.approx(0.0, abs=1e-12)
    for variant in ("sum", "sum_p", "max_p"):
        assert sad_loss(features, features.clone(), variant=variant).item() == pytest.approx(0.0, abs=1e-15)
    layers = [features, _map(*shape[:2], *(n - 1 for n in shape[2:]))]
    assert fsp_loss(layers, [x.clone() for x in layers]).item() == pytest.approx(0.0, abs=1e-15)


def test_at_is_invariant_to_positive_scaling() -> None:
    student, teacher = _map(2, 3, 4, 4), _map(2, 5, 4, 4)
    base = at_loss(student, teacher).item()
    assert base > 0
    assert at_loss(student * 7.5, teacher * 0.01).item() == pytest.approx(base, rel=1e-10)


def test_ab_is_zero_when_the_student_clears_the_margins() -> None:
    teacher = _map(2, 3, 4, 4)
    margin = 1.0
    clear = torch.where(teacher > 0, margin + 0.1 + torch.rand_like(teacher), -margin - torch.rand_like(teacher))
    assert ab_loss(clear, teacher, margin).item() == 0.0
    inside = torch.where(teacher > 0, torch.full_like(teacher, 0.5), torch.full_like(teacher, -0.5))
    assert ab_loss(inside, teacher, margin).item() == pytest.approx(0.25 * teacher.numel() / 2 / 1000)


def test_registry_names_and_stages() -> None:
    for name, fn in {"at": at_loss, "sad": sad_loss, "nst": nst_loss, "fsp": fsp_loss, "ab": ab_loss}.items():
        assert get(name) is fn
    assert info("fsp").layer_lists and info("fsp").stage == "pretrain" and info("fsp").pretrain_epochs == 5
    assert info("ab").stage == "pretrain" and info("ab").pretrain_epochs == 5 and not info("ab").layer_lists
    assert all(info(name).stage == "main" and not info(name).layer_lists for name in ("at", "sad", "nst"))


# ----------------------------------------------------------------- gradients

PAIR_LOSSES = {
    "at": at_loss,
    "nst": nst_loss,
    "sad_sum": lambda s, t: sad_loss(s, t, variant="sum"),
    "sad_sum_p": lambda s, t: sad_loss(s, t, variant="sum_p"),
    "sad_max_p": lambda s, t: sad_loss(s, t, variant="max_p", p=3.0),
    "ab": lambda s, t: ab_loss(s, t, margin=0.8),
}


@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 2, 5), (2, 3, 3)), ((2, 2, 3, 3), (2, 3, 2, 2))])
def test_gradcheck(name: str, s_shape, t_shape) -> None:
    if name == "ab":
        t_shape = s_shape
    student, teacher = (_map(*shape).requires_grad_(True) for shape in (s_shape, t_shape))
    assert torch.autograd.gradcheck(PAIR_LOSSES[name], (student, teacher))


@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 2, 3), (2, 3, 5)), ((2, 2, 2, 2), (2, 3, 3, 3))])
def test_gradcheck_sad_teacher_larger(s_shape, t_shape) -> None:
    student, teacher = (_map(*shape).requires_grad_(True) for shape in (s_shape, t_shape))
    assert torch.autograd.gradcheck(lambda s, t: sad_loss(s, t), (student, teacher))


def test_gradcheck_fsp() -> None:
    shapes = [(2, 2, 4, 4), (2, 3, 3, 3), (2, 2, 2, 2)]
    tensors = [_map(*shape).requires_grad_(True) for shape in shapes * 2]
    assert torch.autograd.gradcheck(lambda *xs: fsp_loss(list(xs[:3]), list(xs[3:])), tuple(tensors))


# ----------------------------------------------------------------- errors

ALL_PAIR_LOSSES = [at_loss, nst_loss, sad_loss, ab_loss]


def _escaped(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("loss_fn", ALL_PAIR_LOSSES)
@pytest.mark.parametrize("shape", [(2, 5), (2, 5, 1), (2, 5, 1, 1)])
def test_vectors_and_single_positions_are_rejected(loss_fn, shape) -> None:
    pattern = rf"feature maps \(batch, channels, \*spatial\) from a convolutional layer.*{_escaped(shape)}"
    with pytest.raises(ValueError, match=pattern):
        loss_fn(torch.randn(*shape), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=pattern):
        fsp_loss([torch.randn(*shape), torch.randn(2, 5, 3)], [torch.randn(2, 5, 3), torch.randn(2, 5, 3)])


@pytest.mark.parametrize("loss_fn", ALL_PAIR_LOSSES)
def test_mask_and_batch_or_dims_mismatch_are_rejected(loss_fn) -> None:
    with pytest.raises(ValueError, match=r"takes no mask \(got mask shape \(2,\)\).*per-example"):
        loss_fn(torch.randn(2, 3, 4), torch.randn(2, 3, 4), mask=torch.ones(2))
    with pytest.raises(ValueError, match=r"student shape \(2, 3, 4\) and teacher shape \(3, 3, 4\)"):
        loss_fn(torch.randn(2, 3, 4), torch.randn(3, 3, 4))
    with pytest.raises(ValueError, match=r"student shape \(2, 3, 4\) and teacher shape \(2, 3, 2, 2\)"):
        loss_fn(torch.randn(2, 3, 4), torch.randn(2, 3, 2, 2))


def test_ab_needs_equal_shapes() -> None:
    with pytest.raises(ValueError, match=r"student shape \(2, 3, 4, 4\) != teacher shape \(2, 5, 4, 4\).*conv1x1"):
        ab_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4))
    with pytest.raises(ValueError, match="margin must be a finite number > 0"):
        ab_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), margin=0.0)


def test_fsp_errors_name_the_problem() -> None:
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 4, 2, 2)
    with pytest.raises(
        ValueError, match=r"layer 1 student shape \(2, 5, 2, 2\) and teacher shape \(2, 4, 2, 2\) .*conv1x1 connector"
    ):
        fsp_loss([a, torch.randn(2, 5, 2, 2)], [a, b])
    with pytest.raises(ValueError, match="at least 2 feature maps per model; got 1 for the student"):
        fsp_loss([a], [a, b])
    with pytest.raises(ValueError, match=r"got a tensor of shape \(2, 3, 4, 4\) for the teacher"):
        fsp_loss([a, b], a)
    with pytest.raises(ValueError, match="2 student layers but 3 teacher layers"):
        fsp_loss([a, b], [a, b, b])
    with pytest.raises(ValueError, match=r"student layers 0 and 1 have shapes \(2, 3, 4, 4\) and \(3, 4, 2, 2\)"):
        fsp_loss([a, torch.randn(3, 4, 2, 2)], [a, b])
    with pytest.raises(ValueError, match=r"layer 0 student shape \(3, 3, 4, 4\) .* different batch sizes"):
        fsp_loss([torch.randn(3, 3, 4, 4), torch.randn(3, 4, 2, 2)], [a, b])
    with pytest.raises(ValueError, match=r"sequence features \(batch, length, hidden\); got student layer 0"):
        fsp_loss([a, b], [a, b], mask=torch.ones(2, 3))


def test_sad_and_at_argument_errors() -> None:
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="unknown variant 'mean'; known variants: sum, sum_p, max_p"):
        sad_loss(x, x, variant="mean")
    with pytest.raises(ValueError, match="p must be a finite number > 1"):
        sad_map(x, "max_p", p=1.0)
    with pytest.raises(ValueError, match="p must be a finite number > 0"):
        at_loss(x, x, p=-1.0)
    with pytest.raises(ValueError, match="interpolation covers 1 to 3 spatial dims"):
        sad_loss(torch.randn(1, 2, 2, 2, 2, 3), torch.randn(1, 2, 2, 2, 2, 2))
