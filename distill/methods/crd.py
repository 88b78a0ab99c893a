"""Contrastive Representation Distillation (CRD), with its momentum memory bank of negatives."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.method import BuildContext, MethodLoss, Shape, StepContext
from distill.losses.registry import register
from distill.train.world import gather_rows, own_rows

EPS = 1e-7


class Embed(nn.Module):
    """Flatten → Linear → L2-normalise: CRD's projection head into the shared embedding space."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.linear(features.flatten(1)), dim=1)


def nce_loss(scores: Tensor, num_examples: int) -> Tensor:
    """CRD's NCE objective on ``scores`` (B, 1 + K): column 0 the positive, the rest K negatives.

    With the noise distribution uniform over the ``N`` training examples (P_n = 1/N) and
    ``h(x) = x / (x + K·P_n)``::

        loss = −(1/B) Σ_b [ log h(s_b0) + Σ_k log(1 − h(s_bk)) ]
    """
    negatives = scores.shape[1] - 1
    noise = negatives / num_examples  # K · P_n
    log_positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    log_negative = torch.log(noise / (scores[:, 1:] + noise + EPS))
    return -(log_positive.sum() + log_negative.sum()) / scores.shape[0]


@register(
    "crd",
    title="Contrastive Representation Distillation",
    paper="Tian et al. ICLR 2020",
    knowledge="contrastive",
    inputs="penultimate embedding + dataset indices",
    recipe="matches: [{student: flatten, teacher: flatten, loss: crd, weight: 0.8}]",
    order=1,
)
class CRDLoss(MethodLoss):
    """Tian, Krishnan & Isola, ICLR 2020, "Contrastive Representation Distillation".

    Student and teacher features (any shape, flattened) are embedded by trainable heads
    ``v_S = Embed_S(f_S)``, ``v_T = Embed_T(f_T)`` (Linear + L2 norm, ``feat_dim`` wide). Two memory
    banks hold one embedding per training example, ``M_S`` and ``M_T`` (N × feat_dim). For each
    example i, the positive is i's own entry and ``nce_k`` negatives are drawn uniformly, with
    replacement, from examples of *other classes* (RepDistiller's "exact" mode). Scores are
    ``exp(v·m / T) / Z`` with ``Z`` fixed at the first batch to ``mean(exp(v·m / T)) · N``, and::

        loss = NCE(scores of v_T against M_S) + NCE(scores of v_S against M_T)

    (see :func:`nce_loss`): the teacher anchors contrast over the student side and vice versa.
    After each training batch the memories move towards the new embeddings,
    ``m_i ← normalise(momentum · m_i + (1 − momentum) · v_i)``.

    Defaults are RepDistiller's: feat_dim 128, nce_t 0.07, momentum 0.5, weight 0.8 (with the
    cross-entropy at 1 and no KD); ``nce_k`` 16384 there, here ``min(16384, N − 1)`` so a small
    dataset does not draw each negative many times over. The memory banks are buffers: they live
    on the training device and are saved in checkpoints. Batches must carry dataset indices (the
    pipeline adds them when a recipe uses ``crd``).

    Several processes (DDP): negatives are drawn for the global batch (every process draws the same, and
    keeps its own rows), ``Z`` is the global first batch's, and every process updates its banks with the
    whole global batch, so the banks stay identical across processes and equal to one process's at the
    same global batch.
    """

    needs_index = True

    def __init__(
        self,
        student_shape: Shape,
        teacher_shape: Shape,
        context: BuildContext,
        feat_dim: int = 128,
        nce_k: int | None = None,
        nce_t: float = 0.07,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        if context.num_examples is None or context.num_examples < 2:
            raise ValueError("crd sizes its memory bank from the training set: it needs the number of examples")
        if not 0 <= momentum < 1 or nce_t <= 0:
            raise ValueError(f"crd: momentum must be in [0, 1) and nce_t > 0, got {momentum} and {nce_t}")
        self.num_examples = context.num_examples
        self.nce_k = nce_k if nce_k is not None else min(16384, self.num_examples - 1)
        self.nce_t, self.momentum = nce_t, momentum
        self.embed_student = Embed(math.prod(student_shape[1:]), feat_dim)
        self.embed_teacher = Embed(math.prod(teacher_shape[1:]), feat_dim)
        bound = 1.0 / math.sqrt(feat_dim / 3)
        self.register_buffer("memory_student", torch.rand(self.num_examples, feat_dim) * 2 * bound - bound)
        self.register_buffer("memory_teacher", torch.rand(self.num_examples, feat_dim) * 2 * bound - bound)
        self.register_buffer("normalisers", torch.full((2,), -1.0))  # Z for (student, teacher) scores
        labels = context.train_labels if context.train_labels is not None else torch.zeros(0)
        self.register_buffer("labels", labels.clone().long())

    def sample_contrast(self, index: Tensor, labels: Tensor | None) -> Tensor:
        """(B, 1 + nce_k) memory rows: each example's own index, then negatives of other classes."""
        batch = index.shape[0]
        if self.labels.numel() == 0:  # no class information: negatives anywhere but the example itself
            offsets = torch.randint(1, self.num_examples, (batch, self.nce_k), device=index.device)
            negatives = (index[:, None] + offsets) % self.num_examples
            return torch.cat([index[:, None], negatives], dim=1)
        own = self.labels[index]
        negatives = torch.empty(batch, self.nce_k, dtype=torch.long, device=index.device)
        for label in own.unique():
            rows = (own == label).nonzero(as_tuple=True)[0]
            pool = (self.labels != label).nonzero(as_tuple=True)[0]
            if pool.numel() == 0:
                raise ValueError("crd: every training example has the same class; there are no negatives")
            draws = torch.randint(0, pool.numel(), (rows.numel(), self.nce_k), device=index.device)
            negatives[rows] = pool[draws]
        return torch.cat([index[:, None], negatives], dim=1)

    def _scores(self, memory: Tensor, anchors: Tensor, contrast: Tensor, slot: int) -> Tensor:
        rows = memory[contrast].detach()  # (B, 1 + K, feat_dim); memories get no gradient
        scores = torch.exp(torch.bmm(rows, anchors[:, :, None]).squeeze(-1) / self.nce_t)
        if self.normalisers[slot] < 0:  # RepDistiller fixes Z on the first (global) batch
            self.normalisers[slot] = gather_rows(scores.mean().detach()[None]).mean() * self.num_examples
        return scores / self.normalisers[slot].clone()  # a copy: the buffer is written in place later

    def forward(self, student: Tensor, teacher: Tensor, context: StepContext) -> Tensor:
        if context.index is None:
            raise ValueError("crd needs dataset indices in every batch: yield (inputs, labels, index)")
        index = context.index.long()
        v_student, v_teacher = self.embed_student(student), self.embed_teacher(teacher)
        # drawn for the global batch under several processes, as one process would, and this one's rows kept
        contrast = own_rows(self.sample_contrast(gather_rows(index), None), len(index))
        teacher_scores = self._scores(self.memory_student, v_teacher, contrast, 0)
        student_scores = self._scores(self.memory_teacher, v_student, contrast, 1)
        loss = nce_loss(teacher_scores, self.num_examples) + nce_loss(student_scores, self.num_examples)
        if self.training:  # every process moves its banks by the whole global batch: they stay equal
            self.update_memory(gather_rows(index), gather_rows(v_student), gather_rows(v_teacher))
        return loss

    @torch.no_grad()
    def update_memory(self, index: Tensor, v_student: Tensor, v_teacher: Tensor) -> None:
        """``m_i ← normalise(momentum · m_i + (1 − momentum) · v_i)`` for the batch's examples."""
        for memory, new in ((self.memory_student, v_student), (self.memory_teacher, v_teacher)):
            mixed = memory[index] * self.momentum + new * (1 - self.momentum)
            memory.index_copy_(0, index, F.normalize(mixed, dim=1))
