"""Universal Logit Distillation (Boizard et al. 2024, "Towards Cross-Tokenizer Distillation: the Universal
Logit Distillation Loss for LLMs"): distillation between models whose vocabularies differ.

Per aligned position, both distributions are sorted in decreasing order and the smaller vocabulary is
zero-padded to the larger; the loss is the L1 distance of the sorted vectors,
``Σ_i |sort(p_S)_i − sort(p_T)_i|`` (the closed form of the Wasserstein-1 distance between the two
distributions when every transport between ranks costs the same), mean over aligned positions. It
needs no token correspondence, only that the two models score the same text.

Alignment (as the reference implementation, Nicolas-BZRD/llm-recipes): each model tokenises the shared
text itself; the ``n``-th scored position of the student is paired with the ``n``-th scored position of
the teacher in the same example, for ``n`` below the smaller of the two counts (the longer sequence's
extra positions are dropped). With completions this pairs the completions' tokens from their start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses.lm import at_least_float32
from distill.losses.registry import register


def _positions(mask: Tensor | None, logits: Tensor, what: str) -> Tensor:
    if mask is None:
        return torch.ones(logits.shape[:2], dtype=torch.bool, device=logits.device)
    if tuple(mask.shape) != tuple(logits.shape[:2]):
        raise ValueError(f"uld: {what} mask has shape {tuple(mask.shape)}, the logits {tuple(logits.shape)}")
    return mask.bool()


def aligned_rows(student_logits: Tensor, teacher_logits: Tensor, student_mask, teacher_mask) -> tuple[Tensor, Tensor]:
    """The paired positions' logits, ``(N, V_S)`` and ``(N, V_T)``: the n-th scored of each, per example."""
    if student_logits.dim() != 3 or teacher_logits.dim() != 3 or len(student_logits) != len(teacher_logits):
        raise ValueError(
            f"uld: logits must be (batch, length, vocabulary) with the same batch; got student "
            f"{tuple(student_logits.shape)} and teacher {tuple(teacher_logits.shape)}"
        )
    s_mask = _positions(student_mask, student_logits, "student")
    t_mask = _positions(teacher_mask, teacher_logits, "teacher")
    students, teachers = [], []
    for row in range(len(student_logits)):
        s_rows, t_rows = student_logits[row][s_mask[row]], teacher_logits[row][t_mask[row]]
        count = min(len(s_rows), len(t_rows))
        students.append(s_rows[:count])
        teachers.append(t_rows[:count])
    return torch.cat(students), torch.cat(teachers)


@register("uld")
def uld_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 1.0,
    student_mask: Tensor | None = None,
    teacher_mask: Tensor | None = None,
) -> Tensor:
    """ULD: ``Σ_i |sort↓(p_S)_i − sort↓(p_T)_i|`` over the zero-padded vocabularies, mean over aligned positions.

    ``p = softmax(z / T)`` for both models (one temperature; the reference allows one each, at 1 by
    default). Masks ``(B, L_S)`` and ``(B, L_T)`` mark each model's scored positions (see the module
    docstring for the alignment). Zero, still attached to the graph, when nothing aligns.
    """
    value = float(temperature)
    if not value > 0:
        raise ValueError(f"uld: temperature must be above 0, got {temperature}")
    student, teacher = aligned_rows(student_logits, teacher_logits, student_mask, teacher_mask)
    if len(student) == 0:
        return student.sum() * 0.0
    p_s = F.softmax(at_least_float32(student) / value, dim=-1).sort(dim=-1, descending=True).values
    p_t = F.softmax(at_least_float32(teacher) / value, dim=-1).sort(dim=-1, descending=True).values
    width = max(p_s.shape[-1], p_t.shape[-1])
    p_s = F.pad(p_s, (0, width - p_s.shape[-1]))
    p_t = F.pad(p_t, (0, width - p_t.shape[-1]))
    return (p_s - p_t).abs().sum(-1).mean()
