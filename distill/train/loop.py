"""One epoch of optimizer steps for the Trainer: forward, backward, step; the NaN guard on each loss; the
step checkpoints and the stop on a signal inside the epoch."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.core.batch import Batch, as_batch
from distill.train.constraints import apply_max_norm
from distill.train.faults import fault_point
from distill.train.fsdp import HostCopy, whole_optimizer_state
from distill.train.guard import NonFiniteLossError, first_non_finite_weight, non_finite_loss
from distill.train.progress import TrainingProgress
from distill.train.signals import StopRequest


class EpochLoop:
    """One epoch of optimizer steps, with the step checkpoints and the stop on a signal inside it."""

    def __init__(
        self,
        trainer: Any,  # the Trainer (not imported: it imports this module)
        accelerator: Accelerator,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        total_steps: int,
        host: HostCopy | None = None,
    ) -> None:
        self.trainer, self.accelerator, self.host = trainer, accelerator, host
        self.model, self.optimizer, self.scheduler, self.total_steps = model, optimizer, scheduler, total_steps
        self.unwrapped = accelerator.unwrap_model(model)
        self.parts = trainer.objective.parts(self.unwrapped)
        self.after_step = getattr(trainer.objective, "after_step", None)
        self.before_step = getattr(trainer.objective, "before_optimizer_step", None)

    def epoch(
        self,
        epoch: int,
        step: int,
        loader: DataLoader,
        skip: int,
        loss_sum: float,
        progress: TrainingProgress,
        stop: StopRequest,
    ) -> tuple[dict[str, Any], int]:
        """Train one epoch from loader batch ``skip`` on (a step checkpoint's); return its record and the step."""
        trainer, settings, accelerator = self.trainer, self.trainer.settings, self.accelerator
        started = time.perf_counter()
        progress.start_epoch(epoch)
        self.model.train()
        batches = len(loader)
        examples, tokens = 0, torch.zeros((), dtype=torch.long)  # tokens summed on the device, read once
        for index, raw in enumerate(loader):
            if index < skip:  # already trained on before the step checkpoint: same order, not re-run
                continue
            batch = trainer._prepare(as_batch(raw))
            examples += batch.labels.shape[0]
            tokens = tokens.to(batch.labels.device) + _tokens_of(batch)
            terms, total, synced = self._one_batch(batch, epoch, step)
            step += synced
            loss_sum += total
            values = {"total": total}
            if synced and step % settings.log_every == 0:
                # every term becomes a Python number only here: on an accelerator each one is a device sync
                values = {name: float(value) for name, value in terms.items()}
                if accelerator.is_main_process:
                    record = {"event": "step", "epoch": epoch, "step": step, "lr": self.scheduler.get_last_lr()[0]}
                    trainer._log({**record, **values}, accelerator)
            progress.advance(values, examples=batch.labels.shape[0], step=step)
            last = index + 1 == batches
            every = settings.checkpoint_every_steps
            if synced and not last and (stop.requested or (every and step % every == 0)):
                folder = self._step_checkpoint(epoch, step, index + 1, loss_sum)
                if stop.requested:
                    raise trainer._interrupted(stop, epoch, step, folder)
        seconds = time.perf_counter() - started
        record = {
            "event": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": loss_sum / max(1, batches),
            "seconds": seconds,
            # every process's examples: each trained this many on its shard (a resumed epoch: the rest of it)
            "examples_per_second": examples * accelerator.num_processes / max(seconds, 1e-9),
        }
        if int(tokens):
            record["tokens_per_second"] = int(tokens) * accelerator.num_processes / max(seconds, 1e-9)
        return record, step

    def _one_batch(self, batch: Batch, epoch: int, step: int) -> tuple[dict[str, Tensor], float, int]:
        """Forward, backward and (at the end of an accumulation) the optimizer step; return the loss terms
        (detached tensors), the total as a number, and 1 when an optimizer step was taken.

        The total is the one number read back every step (one host sync), for the non-finite check."""
        accelerator, settings = self.accelerator, self.trainer.settings
        with accelerator.accumulate(self.model):
            with accelerator.autocast():
                terms = self.trainer.objective.losses(self.model, batch, step, self.total_steps)
            total = float(terms["total"].detach())
            if not math.isfinite(total):
                values = {name: float(value.detach()) for name, value in terms.items()}
                raise non_finite_loss(values, epoch, step, self.trainer._last_good())
            accelerator.backward(terms["total"])
            if accelerator.sync_gradients and settings.grad_clip:
                accelerator.clip_grad_norm_(self.model.parameters(), settings.grad_clip)
            # the objective's own hook sees the gradients (RigL regrows by them) and may skip the step
            skip = accelerator.sync_gradients and self.before_step is not None
            if not (skip and self.before_step(step + 1, self.total_steps, self.optimizer)):
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        detached = {name: value.detach() for name, value in terms.items()}
        if not accelerator.sync_gradients:
            return detached, total, 0
        self.scheduler.step()
        if settings.max_norm:
            apply_max_norm(self.parts["model"], settings.max_norm)
        if self.after_step is not None:  # the objective's own hook: pruning masks, sparse training
            self.after_step(step + 1, self.total_steps)
        fault_point("step")
        return detached, total, 1

    def snapshot(self) -> tuple[dict[str, nn.Module], dict]:
        """The parts and the optimizer state a checkpoint writes. Every process calls this: under FSDP it
        gathers the shards into the host copy (whole weights, the same checkpoint as without FSDP)."""
        if self.host is None:
            return self.parts, self.optimizer.state_dict()
        gathered = self.host.gathered(self.model)
        return self.trainer.objective.parts(gathered), whole_optimizer_state(self.optimizer)

    def _step_checkpoint(self, epoch: int, step: int, batches_done: int, loss_sum: float) -> Path | None:
        path = None
        parts, optimizer_state = self.snapshot()
        if self.accelerator.is_main_process:
            weight = first_non_finite_weight(parts)
            if weight is not None:
                raise NonFiniteLossError(
                    f"weight {weight!r} is not finite at optimizer step {step} (epoch {epoch}); training stopped and "
                    f"no checkpoint was written. Lower optimizer.lr or set train.grad_clip, then resume with --resume."
                )
            path = self.trainer._checkpoint(
                parts, optimizer_state, self.scheduler, epoch, step, {}, inside=(batches_done, loss_sum)
            )
        self.accelerator.wait_for_everyone()
        return path


def _tokens_of(batch: Batch) -> Tensor:
    """The batch's real (unpadded) tokens, for text; zero for tensors."""
    mask = batch.mask
    return mask.sum() if mask is not None else torch.zeros((), dtype=torch.long, device=batch.labels.device)
