"""CRD: the NCE objective by hand, the memory bank's momentum update, class-aware negatives, learning."""

from __future__ import annotations

import math

import pytest
import torch

from distill.core.method import BuildContext, StepContext
from distill.methods.crd import CRDLoss, nce_loss


def _context(num: int = 12, classes: int = 3) -> BuildContext:
    return BuildContext(num_examples=num, num_classes=classes, train_labels=torch.arange(num) % classes)


def _step(index: torch.Tensor, labels: torch.Tensor) -> StepContext:
    placeholder = torch.zeros(len(index), 3)
    return StepContext(student_logits=placeholder, teacher_logits=placeholder, labels=labels, index=index)


def test_nce_loss_matches_a_hand_computation():
    scores = torch.tensor([[0.9, 0.2, 0.1], [0.5, 0.4, 0.05]], dtype=torch.float64)
    num_examples, eps = 10, 1e-7
    noise = 2 / num_examples  # K · P_n with K = 2 negatives
    total = 0.0
    for row in scores.tolist():
        total += math.log(row[0] / (row[0] + noise + eps))
        total += sum(math.log(noise / (s + noise + eps)) for s in row[1:])
    expected = -total / 2
    assert nce_loss(scores, num_examples).item() == pytest.approx(expected, rel=1e-12)


def test_negatives_come_from_other_classes_and_the_positive_is_the_example():
    crd = CRDLoss((4, 5), (4, 7), _context(), feat_dim=4, nce_k=50)
    index = torch.tensor([0, 4, 5, 11])
    contrast = crd.sample_contrast(index, None)
    assert contrast.shape == (4, 51)
    assert torch.equal(contrast[:, 0], index)
    labels = torch.arange(12) % 3
    for row, example in zip(contrast, index, strict=True):
        assert (labels[row[1:]] != labels[example]).all()


def test_memory_moves_towards_the_new_embeddings_with_the_stated_momentum():
    crd = CRDLoss((4, 5), (4, 7), _context(), feat_dim=4, nce_k=6, momentum=0.5)
    index = torch.tensor([1, 2, 6, 9])
    before_student = crd.memory_student.clone()
    before_teacher = crd.memory_teacher.clone()
    untouched = [i for i in range(12) if i not in index.tolist()]
    student, teacher = torch.randn(4, 5), torch.randn(4, 7)
    crd.train()
    crd(student, teacher, _step(index, torch.tensor([1, 2, 0, 0])))
    v_student = crd.embed_student(student).detach()
    v_teacher = crd.embed_teacher(teacher).detach()
    for row, example in enumerate(index.tolist()):
        for memory, before, new in (
            (crd.memory_student, before_student, v_student),
            (crd.memory_teacher, before_teacher, v_teacher),
        ):
            mixed = [0.5 * a + 0.5 * b for a, b in zip(before[example].tolist(), new[row].tolist(), strict=True)]
            norm = math.sqrt(sum(x * x for x in mixed))
            assert memory[example].tolist() == pytest.approx([x / norm for x in mixed], abs=1e-6)
    assert torch.equal(crd.memory_student[untouched], before_student[untouched])
    assert torch.equal(crd.memory_teacher[untouched], before_teacher[untouched])


def test_eval_mode_leaves_the_memory_alone_and_normalisers_are_fixed_once():
    crd = CRDLoss((4, 5), (4, 7), _context(), feat_dim=4, nce_k=6)
    crd.eval()
    before = crd.memory_student.clone()
    index = torch.tensor([0, 1, 2, 3])
    crd(torch.randn(4, 5), torch.randn(4, 7), _step(index, index % 3))
    assert torch.equal(crd.memory_student, before)
    normalisers = crd.normalisers.clone()
    assert (normalisers > 0).all()
    crd(torch.randn(4, 5) * 5, torch.randn(4, 7), _step(index, index % 3))
    assert torch.equal(crd.normalisers, normalisers)


def test_crd_loss_falls_on_a_toy_problem():
    """Students whose features are a noisy copy of the teacher's learn to align with it."""
    torch.manual_seed(0)
    num, classes = 64, 4
    labels = torch.arange(num) % classes
    teacher_features = torch.randn(num, 16) + 3 * torch.nn.functional.one_hot(labels, 16).float()
    student_net = torch.nn.Linear(16, 8)
    crd = CRDLoss((num, 8), (num, 16), _context(num, classes), feat_dim=8, nce_k=32)
    optimizer = torch.optim.Adam([*crd.parameters(), *student_net.parameters()], lr=0.01)
    crd.train()
    losses = []
    for _ in range(60):
        index = torch.randperm(num)[:16]
        loss = crd(student_net(teacher_features[index]), teacher_features[index], _step(index, labels[index]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.8 * sum(losses[:10]) / 10


def test_crd_requires_indices_and_a_dataset_size():
    with pytest.raises(ValueError, match="number of examples"):
        CRDLoss((4, 5), (4, 7), BuildContext())
    crd = CRDLoss((4, 5), (4, 7), _context(), feat_dim=4, nce_k=3)
    step = StepContext(student_logits=torch.zeros(4, 3), teacher_logits=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="indices"):
        crd(torch.randn(4, 5), torch.randn(4, 7), step)


def test_memory_banks_are_buffers_that_follow_the_module():
    crd = CRDLoss((4, 5), (4, 7), _context(), feat_dim=4)
    names = dict(crd.named_buffers())
    assert names["memory_student"].shape == (12, 4) and names["memory_teacher"].shape == (12, 4)
    assert crd.nce_k == 11  # min(16384, N - 1) on a 12-example training set
    crd.to(torch.float64)
    assert crd.memory_student.dtype == torch.float64
