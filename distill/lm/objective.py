"""What a causal-LM student trains on: token-level distillation from a teacher (live, or read from the
on-disk top-k cache) plus an optional supervised next-token term.

Batches are those of :class:`~distill.tasks.lm.LMTask`: ``input_ids`` and ``attention_mask``, and as labels
the *next-token targets* (at position t the token t + 1, ``-100`` where it is not scored: prompt, padding,
the last position). The scored positions are therefore ``labels != -100``, for every term::

    total = kd_weight · LOSS(student, teacher; temperature, mask, options) + hard_weight · CE(student, labels)

with ``LOSS`` one of :data:`TOKEN_LOSSES` (``distill.response_loss``) and ``CE`` the mean next-token
cross-entropy over scored tokens. Without a teacher (the baseline) ``total = CE``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.core.batch import TEACHER_PREFIX, Batch, Inputs
from distill.lm.hidden import LMStudent, hidden_matches
from distill.losses import lm as lm_losses
from distill.losses.uld import uld_loss

# name -> loss(student_logits, teacher, temperature=, mask=, **options); the teacher dense or top-k
TOKEN_LOSSES = {
    "forward_kl": lm_losses.forward_kl_loss,
    "reverse_kl": lm_losses.reverse_kl_loss,
    "tvd": lm_losses.tvd_loss,
    "skew_kl": lm_losses.skew_kl_loss,
    "jsd": lm_losses.jsd_loss,
}


CROSS_TOKENIZER = "uld"  # pairs each model's own tokens by position (distill.losses.uld)


def check_token_loss(name: str | None) -> None:
    """A causal-LM student needs a token-level loss (or none: labels only); the error lists them."""
    if name is not None and name not in TOKEN_LOSSES and name != CROSS_TOKENIZER:
        raise ValueError(
            f"distill.response_loss {name!r} is not a token-level loss for a causal LM; use one of "
            f"{', '.join([*TOKEN_LOSSES, CROSS_TOKENIZER])} (or null with distill.hard_weight for next-token "
            "cross-entropy alone)"
        )


def logits_of_lm(model: nn.Module, inputs: Inputs) -> Tensor:
    """``(B, L, V)`` logits of a causal LM on a batch's ``input_ids`` and ``attention_mask``; a teacher with its
    own tokenizer (marked by :func:`~distill.core.batch.reads_teacher_encoding`) reads the ``teacher_`` keys."""
    if not isinstance(inputs, Mapping):
        raise TypeError("a causal LM reads a mapping with input_ids and attention_mask")
    prefix = (
        TEACHER_PREFIX
        if getattr(model, "distill_teacher_encoding", False) and f"{TEACHER_PREFIX}input_ids" in inputs
        else ""
    )
    return model(input_ids=inputs[f"{prefix}input_ids"], attention_mask=inputs.get(f"{prefix}attention_mask")).logits


def next_token_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy over scored positions (targets ``-100`` elsewhere); 0 when none is."""
    scored = targets != -100
    if not bool(scored.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[scored].float(), targets[scored])


def bare_student(model: nn.Module) -> nn.Module:
    """The causal LM inside what the Trainer holds (DDP's ``module``, :class:`LMStudent`'s ``student``)."""
    model = getattr(model, "module", model)
    return model.student if isinstance(model, LMStudent) else model


class LMObjective:
    """Distil a causal LM (see the module docstring). ``cache`` (a :class:`~distill.lm.cache.TopKCache` of
    the training blocks) replaces the live teacher: batches then carry their block ``index``. ``matches``
    (the recipe's ``distill.matches``) add hidden-state terms (:mod:`distill.lm.hidden`)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        loss: str | None = "forward_kl",
        temperature: float = 1.0,
        kd_weight: float = 1.0,
        hard_weight: float = 0.0,
        options: Mapping[str, Any] | None = None,
        cache: Any = None,
        matches: Sequence[Any] = (),
    ) -> None:
        check_token_loss(loss)
        self.student = student
        self.teacher = teacher.eval() if teacher is not None else None
        if self.teacher is not None:
            for parameter in self.teacher.parameters():
                parameter.requires_grad_(False)
        self.loss = loss if teacher is not None or cache is not None else None
        self.temperature, self.kd_weight, self.hard_weight = temperature, kd_weight, hard_weight
        self.options = dict(options or {})
        self.cache = cache
        self.needs_index = cache is not None
        self.matches = list(matches) if self.teacher is not None else []
        self.trainable: nn.Module = student
        if self.matches:
            assert self.teacher is not None
            found = hidden_matches(
                self.matches, student.config.num_hidden_layers, self.teacher.config.num_hidden_layers
            )
            project = any(getattr(spec, "connector", None) == "linear" for spec in self.matches)
            self.trainable = LMStudent(student, found, self.teacher.config.hidden_size, project)

    def attach(self, run: Any, task: Any) -> None:
        """Read the teacher from the recipe's top-k cache (``teacher.cache``), filled first where missing."""
        spec = getattr(run.recipe.teacher, "cache", None)
        if spec is None or self.teacher is None or self.cache is not None:
            return
        if self.loss == CROSS_TOKENIZER:
            raise ValueError("teacher.cache stores the teacher's top-k on its own tokens: uld needs the live teacher")
        if self.matches:
            raise ValueError(
                "teacher.cache holds the teacher's top-k logits, not its hidden states: distill.matches need the "
                "live teacher; drop teacher.cache or the matches"
            )
        self.cache = run.top_k_cache(self.teacher, task)
        self.needs_index = True

    def to(self, device: torch.device) -> LMObjective:
        if self.teacher is not None and self.cache is None:  # a cached teacher never runs in training
            self.teacher.to(device)
        return self

    def parts(self, model: nn.Module) -> dict[str, nn.Module]:
        if isinstance(model, LMStudent):
            projections = any(True for _ in model.projections.state_dict())
            return {"model": model.student, **({"projections": model.projections} if projections else {})}
        return {"model": model}

    def predict(self, model: nn.Module, inputs: Inputs) -> Tensor:
        return logits_of_lm(bare_student(model), inputs)

    def teacher_outputs(self, batch: Batch) -> Any:
        """Dense teacher logits of the batch, or its cached top-k (:class:`~distill.losses.lm.TopKTeacher`)."""
        if self.cache is not None:
            if batch.index is None:
                raise ValueError("the top-k cache is read by block index, but the batch carries none")
            top = self.cache.teacher_for(batch.index.tolist())
            device = batch.labels.device
            return lm_losses.TopKTeacher(top.indices.to(device), top.log_probs.to(device), top.tail)
        return self.live_teacher(batch)

    def live_teacher(self, batch: Batch) -> Tensor:
        """The teacher's dense logits on ``batch``, run now (whatever the cache holds)."""
        assert self.teacher is not None
        with torch.no_grad():
            return logits_of_lm(self.teacher, batch.inputs)

    def losses(
        self, model: nn.Module, batch: Batch, step: int = 0, total_steps: int | None = None
    ) -> dict[str, Tensor]:
        return self.terms(model, batch, self.teacher_outputs)

    def _forward(self, model: nn.Module, batch: Batch, teacher_of: Any) -> tuple[Tensor, Any, dict[str, Tensor]]:
        """Student logits, the teacher's outputs (or None) and the hidden-state terms of one batch."""
        if not self.matches:
            logits = logits_of_lm(model, batch.inputs)
            return logits, teacher_of(batch) if self.loss is not None else None, {}
        assert self.teacher is not None
        inputs = batch.inputs
        with torch.no_grad():
            teacher = self.teacher(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), output_hidden_states=True
            )
        logits, hidden = model(inputs, teacher.hidden_states, batch.labels != -100)
        return logits, teacher.logits, hidden

    def terms(
        self, model: nn.Module, batch: Batch, teacher_of: Any, hard_weight: float | None = None
    ) -> dict[str, Tensor]:
        """The loss terms of ``batch``, the teacher from ``teacher_of(batch)``; ``hard_weight`` overrides the CE
        weight (0 on a student's own completions)."""
        logits, teacher, hidden = self._forward(model, batch, teacher_of)
        hard = next_token_ce(logits, batch.labels)
        if self.loss is None and not hidden:
            return {"hard_ce": hard, "total": hard}
        weight = self.hard_weight if hard_weight is None else hard_weight
        terms = dict(hidden)
        total = sum(hidden.values()) if hidden else logits.sum() * 0.0
        if self.loss is not None:
            kd = self._logit_term(logits, teacher, batch)
            terms[self.loss] = kd
            total = total + self.kd_weight * kd
        if weight:
            total = total + weight * hard
        return {**terms, "hard_ce": hard.detach(), "total": total}

    def _logit_term(self, logits: Tensor, teacher: Any, batch: Batch) -> Tensor:
        mask = batch.labels != -100
        if self.loss == CROSS_TOKENIZER:  # each model's scored positions, paired in order
            teacher_labels = batch.inputs.get(f"{TEACHER_PREFIX}labels")  # type: ignore[union-attr]
            teacher_mask = mask if teacher_labels is None else teacher_labels != -100
            return uld_loss(logits, teacher, self.temperature, student_mask=mask, teacher_mask=teacher_mask)
        return TOKEN_LOSSES[self.loss](logits, teacher, temperature=self.temperature, mask=mask, **self.options)  # type: ignore[index]
