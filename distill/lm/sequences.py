"""Prompts cut from training examples, and new training sequences made of a prompt and a generated completion
(sequence-level KD trains on the teacher's, on-policy distillation on the student's own).

A *prompt* is an example's unscored prefix (a prompt/completion pair's prompt), or for a corpus block, whose
every token is scored, its first ``prompt_tokens`` tokens. A completion that ended with EOS keeps it (and
scores it: the student learns to stop); one cut at ``max_new_tokens`` has none.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from distill.lm.corpus import IGNORE, Blocks, next_token_targets, right_padded


def prompt_length(targets: Tensor, prompt_tokens: int) -> int:
    """Tokens of the prompt of one example from its next-token ``targets`` (``(L,)``, -100 where unscored)."""
    scored = (targets != IGNORE).nonzero()
    if len(scored) == 0:
        return int(targets.shape[0])
    first_scored_token = int(scored[0]) + 1  # the target at position t is token t + 1
    return first_scored_token if first_scored_token > 1 else min(prompt_tokens, int(targets.shape[0]) - 1)


def prompts_of(input_ids: Tensor, targets: Tensor, attention_mask: Tensor, prompt_tokens: int) -> list[list[int]]:
    """The prompt of every row of a batch (see the module docstring), without padding."""
    prompts = []
    for ids, row_targets, mask in zip(input_ids, targets, attention_mask, strict=True):
        length = prompt_length(row_targets, prompt_tokens)
        prompts.append([int(token) for token, real in zip(ids[:length], mask[:length], strict=True) if real])
    return prompts


def with_completions(
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    ended: Sequence[bool],
    pad_id: int,
    eos_id: int,
) -> Blocks:
    """Right-padded sequences ``prompt + completion (+ EOS where it ended)``; only the completion is scored."""
    rows = []
    for prompt, completion, stopped in zip(prompts, completions, ended, strict=True):
        tail = list(completion) + ([eos_id] if stopped else [])
        rows.append((list(prompt) + tail, [IGNORE] * len(prompt) + tail))
    return right_padded(rows, pad_id)


def as_batch_inputs(blocks: Blocks) -> tuple[dict[str, Tensor], Tensor]:
    """A Trainer batch's ``(inputs, next-token targets)`` from blocks."""
    return {"input_ids": blocks.input_ids, "attention_mask": blocks.attention_mask}, next_token_targets(blocks.labels)
