"""``kind: hf``: a Hugging Face transformer (imported only when one is built)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from distill.models.registry import Inputs, ModelContext, ModelSpec, register_model


@register_model("hf")
class HFSpec(ModelSpec):
    """A transformer classifier. Without ``layers`` it is loaded from ``path`` (a local folder, or
    ``minilm`` for the packaged all-MiniLM-L6-v2) with a new head for the task, seeded. With ``layers`` it
    is a student shrunk to that many layers from the model it derives from (the teacher, a chain's previous
    link) or, when there is none (mutual learning), from ``path``: layers picked by ``layer_map`` (skip |
    uniform | last | a list of teacher layers) and initialised from them (``init: teacher``) or at random."""

    inputs: ClassVar[Inputs] = "tokens"
    kind: Literal["hf"] = "hf"
    path: str = "minilm"
    layers: int | None = Field(None, ge=1)
    layer_map: Literal["skip", "uniform", "last"] | list[int] = "uniform"
    init: Literal["teacher", "random"] = "teacher"
    trust_remote_code: bool = False  # only when the user asks for it

    def load(self, context: ModelContext) -> nn.Module:
        from distill.models.hf.loading import load_classifier

        if context.head is None:
            raise ValueError("model kind 'hf' needs a text task (sequence or token classification)")
        return load_classifier(
            self.path, context.head, context.num_classes, context.seed, trust_remote_code=self.trust_remote_code
        )

    def build(self, context: ModelContext) -> nn.Module:
        if self.layers is None:
            return self.load(context)
        from distill.models.hf.student import student_from_teacher

        source = context.source if context.source is not None else self.load(context)
        return student_from_teacher(source, self.layers, self.layer_map, self.init, context.seed)
