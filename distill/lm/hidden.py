"""Hidden-state matches between a causal-LM student and its teacher: ``distill.matches`` entries such as
``{student: hidden:2, teacher: hidden:12, loss: hidden_mse}`` (or ``loss: cosine``), ``hidden:K`` being the
output of decoder layer K (``hidden:0`` the embeddings), as ``output_hidden_states`` numbers them.

When the widths differ (a student from its own folder) a learned linear projection maps the student's state
to the teacher's width (TinyBERT's ``W_h``); layer-dropped students have the teacher's width and need none
unless ``connector: linear`` asks for one. Only scored positions count (padding and prompt never do).
The projections live in :class:`LMStudent`, the module the Trainer optimises, and are computed inside its
``forward`` so that DDP sees every parameter used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from distill.losses.feature import cosine_loss, hidden_mse_loss

HIDDEN_LOSSES = {"hidden_mse": hidden_mse_loss, "cosine": cosine_loss}
HIDDEN_NAME = re.compile(r"^hidden:(\d+)$")


@dataclass(frozen=True)
class HiddenMatch:
    student: int
    teacher: int
    loss: str
    weight: float


def _layer(name: str, side: str, layers: int) -> int:
    found = HIDDEN_NAME.match(str(name))
    if found is None:
        raise ValueError(
            f"distill.matches {side} {name!r}: a causal LM matches hidden states by name hidden:K "
            f"(K = 0 for the embeddings .. {layers} for the last layer)"
        )
    index = int(found.group(1))
    if index > layers:
        raise ValueError(
            f"distill.matches {side} {name!r}: the {side} has {layers} layers (hidden:0 .. hidden:{layers})"
        )
    return index


def hidden_matches(specs: Sequence[Any], student_layers: int, teacher_layers: int) -> list[HiddenMatch]:
    """The recipe's ``distill.matches`` as hidden-state matches, checked (names, losses, one weight each)."""
    matches = []
    for spec in specs:
        if spec.loss not in HIDDEN_LOSSES:
            raise ValueError(
                f"distill.matches loss {spec.loss!r}: a causal LM's hidden states use one of {', '.join(HIDDEN_LOSSES)}"
            )
        if isinstance(spec.student, list) or isinstance(spec.teacher, list) or isinstance(spec.weight, list):
            raise ValueError("distill.matches for a causal LM: one student and one teacher layer per entry")
        student = _layer(spec.student, "student", student_layers)
        teacher = _layer(spec.teacher, "teacher", teacher_layers)
        matches.append(HiddenMatch(student, teacher, spec.loss, float(spec.weight)))
    return matches


class LMStudent(nn.Module):
    """A causal-LM student with the projections of its hidden-state matches; ``student`` saved alone loads
    into the bare model (the exported one)."""

    def __init__(self, student: nn.Module, matches: Sequence[HiddenMatch], teacher_width: int, project: bool) -> None:
        super().__init__()
        self.student = student
        self.matches = list(matches)
        width = student.config.hidden_size
        self.projections = nn.ModuleList(
            nn.Linear(width, teacher_width) if project or width != teacher_width else nn.Identity() for _ in matches
        )

    def forward(
        self, inputs: Mapping[str, Tensor], teacher_hidden: Sequence[Tensor] | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(logits, {match name: weighted term})``; the terms only when ``teacher_hidden`` is given."""
        wanted = teacher_hidden is not None and bool(self.matches)
        output = self.student(
            input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), output_hidden_states=wanted
        )
        terms: dict[str, Tensor] = {}
        if wanted:
            for index, (match, projection) in enumerate(zip(self.matches, self.projections, strict=True)):
                student_state = projection(output.hidden_states[match.student])
                teacher_state = teacher_hidden[match.teacher]  # type: ignore[index]
                loss = HIDDEN_LOSSES[match.loss](student_state.float(), teacher_state.float(), mask)
                terms[f"hidden{index}_{match.loss}"] = match.weight * loss
        return output.logits, terms
