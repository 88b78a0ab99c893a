"""What a language-model run reports beside the table: held-out perplexity and KL to the teacher, tokens
per second of generation, and a few generations of teacher and students on the same prompts. Training
tokens/s is every run's (:func:`distill.train.metrics_log.training_throughput`, added by the runner).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.lm.generation import GenerationSpec, generate
from distill.lm.sequences import prompts_of


def sample_prompts(dataset: Any, count: int, prompt_tokens: int) -> list[list[int]]:
    """The prompts (:func:`~distill.lm.sequences.prompts_of`) of the first ``count`` examples of a split."""
    items = [dataset[position] for position in range(min(count, len(dataset)))]
    if not items:
        return []
    stacked = {key: torch.stack([item[key] for item in items]) for key in ("input_ids", "labels", "attention_mask")}
    return prompts_of(stacked["input_ids"], stacked["labels"], stacked["attention_mask"], prompt_tokens)


def lm_details(
    task: Any, model: nn.Module, teacher: nn.Module | None, settings: GenerationSpec, run_dir: Path | None = None
) -> dict[str, Any]:
    """The report entries of one model (see the module docstring)."""
    details: dict[str, Any] = {}
    evaluation, tokenizer = task.side(model)  # a teacher with its own tokenizer reads its own encoding
    for split in evaluation:
        details[f"{split}_perplexity"] = task.split_metrics(model, split)["perplexity"]
    if teacher is not None and teacher is not model and not task.two_encodings:  # KL needs one vocabulary
        details["teacher_kl"] = task.teacher_kl(model, teacher)
    if settings.samples:
        prompts = sample_prompts(evaluation[task.score_split], settings.samples, settings.prompt_tokens)
        generated = generate(model, prompts, tokenizer, settings)
        details["generation_tokens_per_second"] = generated.tokens_per_second
        decode = tokenizer.decode
        details["generations"] = [
            {"prompt": decode(prompt, skip_special_tokens=True), "completion": decode(text, skip_special_tokens=True)}
            for prompt, text in zip(prompts, generated.completions, strict=True)
        ]
    return details


def markdown_section(results: dict[str, Any]) -> list[str]:
    """The report's language-model table and generations, when the rows carry them (else nothing)."""
    entries = [("teacher", results["teacher"])] if "teacher" in results else []
    entries += [(row["label"], row) for row in results["rows"]]
    entries = [(label, entry["details"]) for label, entry in entries if "details" in entry]
    if not entries or not any("generations" in details or "test_perplexity" in details for _, details in entries):
        return []
    split = "test" if "test_perplexity" in entries[0][1] else "validation"
    lines = [
        "",
        f"| model | {split} perplexity | KL to teacher | train tokens/s | generation tokens/s |",
        "|---|---|---|---|---|",
    ]
    for label, details in entries:
        cells = [
            _number(details.get(f"{split}_perplexity"), ".2f"),
            _number(details.get("teacher_kl"), ".4f"),
            _number(details.get("train_tokens_per_second"), ".0f"),
            _number(details.get("generation_tokens_per_second"), ".1f"),
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    samples = [(label, details["generations"]) for label, details in entries if details.get("generations")]
    if samples:
        lines += ["", "Generations on the same prompts (first seed):", ""]
        for index, sample in enumerate(samples[0][1]):
            lines.append(f"**Prompt {index + 1}:** {sample['prompt']!r}")
            lines += [f"- {label}: {generations[index]['completion']!r}" for label, generations in samples]
            lines.append("")
    return lines


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)
