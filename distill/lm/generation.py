"""Generation with a causal LM: the recipe's ``generation:`` settings, prompts, samples and their speed.

The same settings drive the report's samples (teacher and students on the same prompts), sequence-level
KD (the teacher's completions) and on-policy distillation (the student's own completions).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from distill.sections import RecipeSection


class GenerationSpec(RecipeSection):
    """``temperature: 0`` is greedy decoding (beam search when ``num_beams`` > 1); above 0, sampling with
    nucleus ``top_p``. ``samples`` prompts are shown in the report; corpus prompts are the first
    ``prompt_tokens`` tokens of test blocks."""

    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    num_beams: int = Field(1, ge=1)
    samples: int = Field(3, ge=0)
    prompt_tokens: int = Field(16, ge=1)

    def generate_kwargs(self, tokenizer: Any) -> dict[str, Any]:
        sampling = self.temperature > 0
        options: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sampling,
            "num_beams": self.num_beams,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        }
        if sampling:
            options.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        return options


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int) -> dict[str, Tensor]:
    """Prompts as one left-padded batch (decoder-only models continue from the right end)."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt))
            attention_mask[row, width - len(prompt) :] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@dataclass(frozen=True)
class Generated:
    """What a model wrote after each prompt: the new tokens before EOS, whether EOS came, and the speed."""

    completions: list[list[int]]
    ended: list[bool]
    tokens_per_second: float


@torch.no_grad()
def generate(
    model: nn.Module, prompts: Sequence[Sequence[int]], tokenizer: Any, settings: GenerationSpec, seed: int = 0
) -> Generated:
    """``model``'s completions of ``prompts`` (one left-padded batch) with ``settings``.

    Sampling draws from a generator seeded with ``seed`` and the global RNG state is restored after, so
    generating (a report, an on-policy batch) never changes what training draws next.
    """
    batch = left_padded(prompts, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    was_training = model.training
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        started = time.perf_counter()
        output = model.generate(**batch, **settings.generate_kwargs(tokenizer))
        seconds = time.perf_counter() - started
    finally:
        torch.random.set_rng_state(state)
        model.train(was_training)
    new = output[:, batch["input_ids"].shape[1] :].tolist()
    eos = tokenizer.eos_token_id
    completions = [tokens[: tokens.index(eos)] if eos in tokens else tokens for tokens in new]
    written = sum(len(tokens) for tokens in completions)
    return Generated(completions, [eos in tokens for tokens in new], written / seconds if seconds > 0 else 0.0)
