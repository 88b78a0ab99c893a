"""Token-level LM losses against hand computations written out with explicit loops (issue 17, item 3-4)."""

from __future__ import annotations

import math

import pytest
import torch

from distill import losses
from distill.losses.lm import (
    TopKTeacher,
    forward_kl_loss,
    jsd_loss,
    reverse_kl_loss,
    skew_kl_loss,
    tvd_loss,
)

STUDENT = [[[1.0, 0.0, -1.0, 0.5], [0.2, 0.3, -0.4, 2.0]], [[-1.0, 1.5, 0.0, 0.0], [3.0, -2.0, 1.0, 0.1]]]
TEACHER = [[[0.5, 0.5, -2.0, 1.0], [1.0, -1.0, 0.0, 0.0]], [[0.0, 2.0, -1.0, 0.3], [2.0, 0.0, 0.5, -0.5]]]
MASK = [[1, 1], [0, 1]]  # the (1, 0) token is padding or prompt


def _softmax(row: list[float], t: float = 1.0) -> list[float]:
    exps = [math.exp(v / t) for v in row]
    return [e / sum(exps) for e in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _scored_rows(mask=MASK):
    for b in range(2):
        for position in range(2):
            if mask[b][position]:
                yield STUDENT[b][position], TEACHER[b][position]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _tensors(dtype=torch.float32):
    return (
        torch.tensor(STUDENT, dtype=dtype),
        torch.tensor(TEACHER, dtype=dtype),
        torch.tensor(MASK, dtype=torch.bool),
    )


def test_forward_and_reverse_kl_match_the_hand_computation_at_a_temperature():
    s, t, mask = _tensors()
    rows = list(_scored_rows())
    forward = _mean([_kl(_softmax(tr, 2.0), _softmax(sr, 2.0)) for sr, tr in rows])
    reverse = _mean([_kl(_softmax(sr, 2.0), _softmax(tr, 2.0)) for sr, tr in rows])
    assert forward_kl_loss(s, t, temperature=2.0, mask=mask).item() == pytest.approx(forward, rel=1e-5)
    assert reverse_kl_loss(s, t, temperature=2.0, mask=mask).item() == pytest.approx(reverse, rel=1e-5)


def test_tvd_and_skew_kl_match_the_hand_computation():
    s, t, mask = _tensors()
    rows = [(_softmax(sr), _softmax(tr)) for sr, tr in _scored_rows()]
    tvd = _mean([0.5 * sum(abs(a - b) for a, b in zip(ps, pt, strict=True)) for ps, pt in rows])
    alpha = 0.1
    skew = _mean([_kl(pt, [alpha * b + (1 - alpha) * a for a, b in zip(ps, pt, strict=True)]) for ps, pt in rows])
    assert tvd_loss(s, t, mask=mask).item() == pytest.approx(tvd, rel=1e-5)
    assert skew_kl_loss(s, t, alpha=alpha, mask=mask).item() == pytest.approx(skew, rel=1e-5)
    assert skew_kl_loss(s, t, alpha=0.0, mask=mask).item() == pytest.approx(forward_kl_loss(s, t, mask=mask).item())


def test_jsd_matches_the_generalized_jsd_by_hand():
    s, t, mask = _tensors()
    beta = 0.3
    values = []
    for sr, tr in _scored_rows():
        ps, pt = _softmax(sr), _softmax(tr)
        m = [beta * b + (1 - beta) * a for a, b in zip(ps, pt, strict=True)]
        values.append(beta * _kl(pt, m) + (1 - beta) * _kl(ps, m))
    assert jsd_loss(s, t, beta=beta, mask=mask).item() == pytest.approx(_mean(values), rel=1e-5)
    normalized = jsd_loss(s, t, beta=beta, mask=mask, normalize=True).item()
    assert normalized == pytest.approx(_mean(values) / (beta * (1 - beta)), rel=1e-5)


def test_normalized_jsd_is_continuous_at_both_ends_and_the_formula_tends_to_zero():
    s, t, mask = _tensors()
    forward = forward_kl_loss(s, t, mask=mask).item()
    reverse = reverse_kl_loss(s, t, mask=mask).item()
    assert jsd_loss(s, t, beta=0.0, mask=mask, normalize=True).item() == pytest.approx(forward, rel=1e-6)
    assert jsd_loss(s, t, beta=1.0, mask=mask, normalize=True).item() == pytest.approx(reverse, rel=1e-6)
    for near in (1e-3, 1e-4):
        # the limit is approached at rate O(β): within a few β of relative error in float32
        assert jsd_loss(s, t, beta=near, mask=mask, normalize=True).item() == pytest.approx(forward, rel=5 * near)
        assert jsd_loss(s, t, beta=1 - near, mask=mask, normalize=True).item() == pytest.approx(reverse, rel=5 * near)
    # without normalisation the formula is 0 at the ends and small near them: no jump either
    assert jsd_loss(s, t, beta=0.0, mask=mask).item() == 0.0
    assert jsd_loss(s, t, beta=1e-4, mask=mask).item() == pytest.approx(1e-4 * forward, rel=1e-3)
    assert jsd_loss(s, t, beta=1 - 1e-4, mask=mask).item() == pytest.approx(1e-4 * reverse, rel=1e-3)


@pytest.mark.parametrize("loss", [forward_kl_loss, reverse_kl_loss, tvd_loss, skew_kl_loss, jsd_loss])
def test_masked_positions_change_nothing_even_when_they_hold_nan(loss):
    s, t, mask = _tensors()
    reference = loss(s, t, mask=mask)
    s2, t2 = s.clone(), t.clone()
    s2[1, 0] = float("nan")
    t2[1, 0] = 1e6
    s2.requires_grad_(True)
    value = loss(s2, t2, mask=mask)
    value.backward()
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.all(s2.grad[1, 0] == 0) and torch.isfinite(s2.grad).all()


@pytest.mark.parametrize(
    ("loss", "options"),
    [
        (forward_kl_loss, {"temperature": 1.5}),
        (reverse_kl_loss, {"temperature": 0.7}),
        (tvd_loss, {}),
        (skew_kl_loss, {"alpha": 0.2}),
        (jsd_loss, {"beta": 0.4}),
        (jsd_loss, {"beta": 0.4, "normalize": True}),
    ],
)
def test_gradcheck(loss, options):
    s, t, mask = _tensors(torch.float64)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, mask=mask, **options), (s,))


@pytest.mark.parametrize("tail", ["renormalize", "uniform", "student"])
@pytest.mark.parametrize("loss", [forward_kl_loss, reverse_kl_loss, tvd_loss, skew_kl_loss, jsd_loss])
def test_top_k_at_the_full_vocabulary_equals_the_dense_loss(loss, tail):
    generator = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 11, generator=generator) * 3
    t = torch.randn(2, 5, 11, generator=generator) * 3
    mask = torch.rand(2, 5, generator=generator) > 0.3
    dense = loss(s, t, mask=mask, temperature=1.3)
    top = loss(s, TopKTeacher.from_logits(t, k=11, tail=tail), mask=mask, temperature=1.3)
    assert top.item() == pytest.approx(dense.item(), abs=1e-6)


def test_top_k_tail_rules_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    p = _softmax(logits[0].tolist())
    top = TopKTeacher.from_logits(logits, k=2, tail="renormalize")
    assert top.indices.tolist() == [[0, 1]]
    renormalized = top.completed_log_probs(4).exp()[0].tolist()
    assert renormalized == pytest.approx([p[0] / (p[0] + p[1]), p[1] / (p[0] + p[1]), 0.0, 0.0], rel=1e-6)
    uniform = TopKTeacher.from_logits(logits, k=2, tail="uniform").completed_log_probs(4).exp()[0].tolist()
    rest = (1 - p[0] - p[1]) / 2
    assert uniform == pytest.approx([p[0], p[1], rest, rest], rel=1e-6)
    # forward KL to a renormalised top-2 teacher, by hand, against a student
    student = [0.0, 1.0, 0.5, -0.5]
    q = _softmax(student)
    expected = sum(r * math.log(r / qi) for r, qi in zip(renormalized[:2], q[:2], strict=True))
    assert forward_kl_loss(torch.tensor([student]), top).item() == pytest.approx(expected, rel=1e-5)
    # reverse KL restricts the student to the teacher's two tokens
    q2 = [q[0] / (q[0] + q[1]), q[1] / (q[0] + q[1])]
    expected_reverse = sum(a * math.log(a / b) for a, b in zip(q2, renormalized[:2], strict=True))
    assert reverse_kl_loss(torch.tensor([student]), top).item() == pytest.approx(expected_reverse, rel=1e-5)


def test_no_scored_token_gives_an_attached_zero():
    s, t, _ = _tensors()
    s.requires_grad_(True)
    value = jsd_loss(s, t, mask=torch.zeros(2, 2, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and torch.all(s.grad == 0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s, t: forward_kl_loss(s, t, temperature=0), "temperature must be a finite number above 0"),
        (lambda s, t: jsd_loss(s, t, beta=1.5), "beta must be in [0, 1]"),
        (lambda s, t: skew_kl_loss(s, t, alpha=-0.1), "alpha must be in [0, 1]"),
        (lambda s, t: forward_kl_loss(s, t[..., :3]), "same vocabulary"),
        (lambda s, t: forward_kl_loss(s, t, mask=torch.ones(3)), "mask has shape"),
    ],
)
def test_bad_arguments_are_one_sentence(call, message):
    s, t, _ = _tensors()
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(s, t)


def test_the_lm_losses_are_registered():
    for name in ("forward_kl", "reverse_kl", "tvd", "skew_kl", "jsd"):
        assert losses.get(name) is getattr(__import__("distill.losses.lm", fromlist=["x"]), f"{name}_loss")


def test_the_student_tail_is_the_divergence_over_k_plus_one_buckets_by_hand():
    teacher_logits = [2.0, 1.0, 0.0, -1.0, 0.5]
    student_logits = [0.0, 1.0, 0.5, -0.5, 1.5]
    p, q = _softmax(teacher_logits), _softmax(student_logits)
    top = TopKTeacher.from_logits(torch.tensor([teacher_logits]), k=2, tail="student")  # tokens 0 and 1
    r, big_q = 1 - p[0] - p[1], 1 - q[0] - q[1]
    forward = p[0] * math.log(p[0] / q[0]) + p[1] * math.log(p[1] / q[1]) + r * math.log(r / big_q)
    reverse = q[0] * math.log(q[0] / p[0]) + q[1] * math.log(q[1] / p[1]) + big_q * math.log(big_q / r)
    tvd = 0.5 * (abs(p[0] - q[0]) + abs(p[1] - q[1]) + abs(r - big_q))
    student = torch.tensor([student_logits], requires_grad=True)
    assert forward_kl_loss(student, top).item() == pytest.approx(forward, rel=1e-5)
    assert reverse_kl_loss(student, top).item() == pytest.approx(reverse, rel=1e-5)
    assert tvd_loss(student, top).item() == pytest.approx(tvd, rel=1e-5)
    # a lower bound of the dense divergence (merging tokens never increases a KL)
    assert forward <= forward_kl_loss(student, torch.tensor([teacher_logits])).item() + 1e-7
    # gradient of the bucket form: d/dz of -Σ_top p log q - r log Q, by hand through q = softmax(z)
    forward_kl_loss(student, top).backward()
    expected = []
    for j in range(5):
        d_log_q = [(1.0 if i == j else 0.0) - q[j] for i in range(5)]  # d log q_i / d z_j
        d_log_big_q = (sum(q[i] for i in (2, 3, 4) if i == j) - big_q * q[j]) / big_q
        expected.append(-(p[0] * d_log_q[0] + p[1] * d_log_q[1]) - r * d_log_big_q)
    assert student.grad[0].tolist() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("loss", [forward_kl_loss, reverse_kl_loss, tvd_loss, jsd_loss])
def test_a_student_tail_with_no_mass_left_is_finite_and_equals_the_renormalised_one(loss):
    # a cached top 2 whose stored probabilities sum to just over 1 (rounding): nothing left for the other tokens
    top = [math.log(0.75), math.log(0.2500005)]
    student = torch.tensor([[0.0, 1.0, 0.5, -0.5, 1.5]], requires_grad=True)
    teachers = {
        tail: TopKTeacher(torch.tensor([[0, 1]]), torch.tensor([top]), tail) for tail in ("student", "renormalize")
    }
    assert torch.isinf(teachers["student"].completed_log_probs(5, student.log_softmax(-1))[0, 2:]).all()
    value = loss(student, teachers["student"])
    assert math.isfinite(value.item())
    assert value.item() == pytest.approx(loss(student, teachers["renormalize"]).item(), rel=1e-6)
