"""``kind: causal_lm``: a ``transformers`` causal language model, as a teacher or as a student.

* Teacher: ``path`` is a Hugging Face folder, a ``.gguf`` file, or ``smollm2`` (the packaged
  SmolLM2-135M-Instruct). It is used as it is, never trained (``trained_weights`` names its file).
* Student: ``layers`` (a count, or a list of the teacher's layer indices) makes it the teacher with only
  those decoder layers, initialised from the teacher's (depth pruning as NVIDIA Minitron's); a count
  keeps the first and last layers and spreads the rest evenly (``layer_map: uniform``) or keeps the
  first ones (``first``). Without ``layers`` it is the model at ``path`` (its own folder).

The student trains on :class:`~distill.lm.objective.LMObjective`, built from the recipe's ``distill:`` block
(``response_loss`` one of forward_kl, reverse_kl, tvd, skew_kl, jsd; ``hard_weight`` for next-token CE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import field_validator
from torch import nn

from distill.models.registry import Inputs, ModelContext, ModelSpec, register_model
from distill.sections import Text

PACKAGED = "smollm2"


@register_model("causal_lm")
class CausalLMSpec(ModelSpec):
    inputs: ClassVar[Inputs] = "tokens"
    kind: Literal["causal_lm"] = "causal_lm"
    path: Text = PACKAGED
    layers: int | list[int] | None = None
    layer_map: Literal["uniform", "first"] = "uniform"

    @field_validator("layers")
    @classmethod
    def _layers_exist(cls, layers: int | list[int] | None) -> int | list[int] | None:
        if isinstance(layers, int) and layers < 1:
            raise ValueError("layers must be at least 1")
        if isinstance(layers, list) and (not layers or min(layers) < 0):
            raise ValueError("layers lists teacher layer indices from 0 (at least one)")
        return layers

    def build(self, context: ModelContext) -> nn.Module:
        from distill.lm.models import decoder_layers, drop_layers, load_causal_lm, uniform_layers

        if context.head not in (None, "causal_lm"):
            raise ValueError(
                f"model kind 'causal_lm' needs a language-model dataset (kjv or lm), not a {context.head} task"
            )
        source = context.source if self.layers is not None and context.source is not None else None
        model = source if source is not None else load_causal_lm(self.path)
        if self.layers is None:
            return model
        total = len(decoder_layers(model))
        if isinstance(self.layers, int):
            if self.layers > total:
                raise ValueError(f"layers: {self.layers} asked, but the teacher has {total} decoder layers")
            keep = uniform_layers(total, self.layers) if self.layer_map == "uniform" else list(range(self.layers))
        else:
            keep = list(self.layers)
        return drop_layers(model, keep)

    def trained_weights(self, context: ModelContext) -> Path | None:
        """A teacher is used as it is: its weights file (the GGUF file, or the folder's safetensors)."""
        from distill.lm.models import resolve_model_path

        if self.layers is not None:
            return None
        path = resolve_model_path(self.path)
        if path.suffix == ".gguf":
            return path
        files = sorted(path.glob("*.safetensors"))
        return files[0] if files else None

    def objective(self, model: nn.Module, teacher: nn.Module | None, distill: Any) -> Any:
        from distill.lm.objective import LMObjective

        if teacher is None:  # the baseline: next-token cross-entropy on the same data
            return LMObjective(model, None, None)
        return LMObjective(
            model,
            teacher,
            distill.response_loss,
            distill.temperature,
            distill.kd_weight,
            distill.hard_weight,
            distill.response_options,
            matches=distill.matches,
        )
