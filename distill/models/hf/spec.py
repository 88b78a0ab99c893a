"""``kind: hf``: a Hugging Face transformer (imported only when one is built)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from distill.models.registry import Inputs, ModelContext, ModelSpec, register_model
from distill.sections import Text


@register_model("hf")
class HFSpec(ModelSpec):
    """A transformer classifier. Without ``layers`` it is loaded from ``path`` (a local folder, or
    ``minilm`` for the packaged all-MiniLM-L6-v2) with a new head for the task, seeded. With ``layers`` it
    is a student shrunk to that many layers from the model it derives from (the teacher, a chain's previous
    link) or, when there is none (mutual learning), from ``path``: layers picked by ``layer_map`` (skip |
    uniform | last | a list of teacher layers) and initialised from them (``init: teacher``) or at random."""

    inputs: ClassVar[Inputs] = "tokens"
    kind: Literal["hf"] = "hf"
    path: Text = "minilm"
    layers: int | None = Field(None, ge=1)
    layer_map: Literal["skip", "uniform", "last"] | list[int] = "uniform"
    init: Literal["teacher", "random"] = "teacher"
    trust_remote_code: bool = False  # only when the user asks for it

    def load(self, context: ModelContext) -> nn.Module:
        from distill.models.hf.loading import check_head_labels, load_classifier, trained_head_labels

        if context.head is None:
            raise ValueError("model kind 'hf' needs a text task (sequence or token classification)")
        head = trained_head_labels(self.path, context.head)  # type: ignore[arg-type]
        if head is not None and context.label_names is not None:
            check_head_labels(self.path, head, context.label_names)
        return load_classifier(
            self.path,
            context.head,  # type: ignore[arg-type]
            context.num_classes,
            context.seed,
            trust_remote_code=self.trust_remote_code,
            label_names=context.label_names,
        )

    def trained_weights(self, context: ModelContext) -> Path | None:
        """The weights file of a folder that is already a fine-tuned classifier for this task (used as the
        teacher without training unless the recipe gives ``teacher.train``), else None."""
        from distill.models.hf.loading import resolve_model_path, trained_head_labels

        if self.layers is not None or context.head is None:
            return None
        if trained_head_labels(self.path, context.head) is None:  # type: ignore[arg-type]
            return None
        weights = Path(resolve_model_path(self.path)) / "model.safetensors"
        return weights if weights.is_file() else None

    def build(self, context: ModelContext) -> nn.Module:
        if self.layers is None:
            return self.load(context)
        from distill.models.hf.student import student_from_teacher

        source = context.source if context.source is not None else self.load(context)
        return student_from_teacher(source, self.layers, self.layer_map, self.init, context.seed)
