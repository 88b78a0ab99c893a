"""On-policy distillation (GKD: Agarwal et al., ICLR 2024, "On-Policy Distillation of Language Models:
Learning from Self-Generated Mistakes").

With probability λ (``student_data_fraction``) a training batch's completions are replaced by the current
student's own, generated from the batch's prompts with the recipe's ``generation:`` settings, and the live
teacher scores them token by token with the recipe's loss (GKD's default, the generalized JSD ``jsd``);
otherwise the batch is used as it is (teacher live, or read from the top-k cache). λ = 0 is offline
distillation, λ = 1 purely on-policy. On a student-generated batch there is no cross-entropy term: the
completions are the student's own, not data (as GKD). The draw of each step comes from its own generator,
seeded by the run's seed and the step, so that a resumed run makes the same choices.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distill.core.batch import Batch
from distill.lm.generation import GenerationSpec, generate
from distill.lm.objective import LMObjective, bare_student
from distill.lm.sequences import as_batch_inputs, prompts_of, with_completions

STEP_STRIDE = 1_000_003  # seeds of (seed, step) pairs never collide for fewer steps than this


class OnPolicyObjective(LMObjective):
    def __init__(
        self,
        base: LMObjective,
        student_data_fraction: float,
        generation: GenerationSpec,
        tokenizer: Any,
        seed: int = 0,
    ) -> None:
        if base.teacher is None or base.loss is None:
            raise ValueError("on-policy distillation needs a teacher and a token-level distill.response_loss")
        super().__init__(
            base.student,
            base.teacher,
            base.loss,
            base.temperature,
            base.kd_weight,
            base.hard_weight,
            base.options,
            cache=base.cache,  # off-policy batches read the cache the base attached, if any
        )
        self.matches, self.trainable = base.matches, base.trainable  # the same projections, if any
        self.fraction, self.generation, self.tokenizer, self.seed = student_data_fraction, generation, tokenizer, seed
        self.on_policy_batches = 0  # how many batches the student wrote (reported in tests and logs)

    def to(self, device: torch.device) -> OnPolicyObjective:
        self.teacher.to(device)  # type: ignore[union-attr]  # student batches always need the live teacher
        return self

    def on_policy(self, step: int) -> bool:
        """Whether step ``step``'s batch is the student's own: a draw below λ from the step's own generator."""
        if self.fraction <= 0:
            return False
        generator = torch.Generator().manual_seed(self.seed * STEP_STRIDE + step)
        return float(torch.rand((), generator=generator)) < self.fraction

    def student_batch(self, model: nn.Module, batch: Batch, step: int) -> Batch:
        """The batch's prompts completed by ``model`` (sampling seeded by the step)."""
        inputs = batch.inputs
        prompts = prompts_of(inputs["input_ids"], batch.labels, inputs["attention_mask"], self.generation.prompt_tokens)
        student = bare_student(model)  # generate lives on the causal LM, inside DDP and the projections
        written = generate(student, prompts, self.tokenizer, self.generation, seed=self.seed * STEP_STRIDE + step)
        pad = self.tokenizer.pad_token_id
        blocks = with_completions(prompts, written.completions, written.ended, pad, self.tokenizer.eos_token_id)
        new_inputs, targets = as_batch_inputs(blocks)
        device = batch.labels.device
        return Batch({key: value.to(device) for key, value in new_inputs.items()}, targets.to(device))

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        if not self.on_policy(step):
            return self.terms(model, batch, self.teacher_outputs)
        self.on_policy_batches += 1
        return self.terms(model, self.student_batch(model, batch, step), self.live_teacher, hard_weight=0.0)
