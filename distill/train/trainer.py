"""The training loop, on Hugging Face Accelerate (devices, DDP, mixed precision, gradient accumulation).

One loop trains teachers, baselines and distilled students: what differs is the *objective*
(see ``distiller.py``). Each epoch ends with an evaluation, a line in ``metrics.jsonl`` and an
atomic checkpoint; ``fit(resume=True)`` continues from the last checkpoint exactly (same data
order, same dropout and jitter draws), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.core.batch import Batch, as_batch
from distill.core.evaluation import Metric, evaluate
from distill.train.checkpoint import latest_checkpoint, read_checkpoint, restore_checkpoint_rng, write_checkpoint
from distill.train.constraints import apply_max_norm
from distill.train.progress import TrainingProgress
from distill.train.settings import TrainSettings

METRICS_FILE = "metrics.jsonl"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or inf; training stopped and the last good checkpoint is untouched."""


def fresh_accelerator(settings: TrainSettings, run_dir: Path | None = None) -> Accelerator:
    """An Accelerator for this run; the singletons a previous run left behind are reset first.

    Accelerate keeps process-wide state and refuses a second Accelerator with other settings,
    but a pipeline trains several models (teacher, baselines, students) in one process.
    """
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(
        cpu=settings.cpu,
        mixed_precision=settings.mixed_precision,
        gradient_accumulation_steps=settings.grad_accum_steps,
        log_with=settings.log_with,
        project_dir=run_dir if settings.log_with else None,
    )


def build_optimizer(parameters: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    options = settings.optimizer
    if options.name == "sgd":
        return torch.optim.SGD(
            parameters,
            lr=options.lr,
            momentum=options.momentum,
            nesterov=options.nesterov,
            weight_decay=options.weight_decay,
        )
    optimizer_class = torch.optim.Adam if options.name == "adam" else torch.optim.AdamW
    return optimizer_class(parameters, lr=options.lr, betas=options.betas, weight_decay=options.weight_decay)


class Trainer:
    """Train ``objective.trainable`` on ``train_data``; evaluate on ``eval_data`` after every epoch.

    ``eval_data`` is ``(split_name, dataset)``: the validation split when the recipe holds one out,
    else the test split, which is then only logged, never used to pick anything.
    """

    def __init__(
        self,
        objective: Any,
        train_data: Dataset,
        eval_data: tuple[str, Dataset] | None,
        settings: TrainSettings,
        run_dir: str | Path,
        seed: int = 0,
        recipe: dict | None = None,
        input_transform: Callable[[Tensor], Tensor] | None = None,
        show_progress: bool = True,
        description: str = "train",
        collate_fn: Callable[[list], Any] | None = None,
        train_sampler: Callable[[torch.Generator], Sampler] | None = None,
        metric: Metric | None = None,
    ) -> None:
        self.objective = objective
        self.train_data = train_data
        self.eval_data = eval_data
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.seed = seed
        self.recipe = recipe or {}
        self.input_transform = input_transform
        self.show_progress = show_progress
        self.description = description
        # Text data: dynamic padding (collate_fn) and length-grouped batches (train_sampler, built
        # from the Trainer's generator so that the order stays reproducible and resumable).
        self.collate_fn = collate_fn
        self.train_sampler = train_sampler
        self.metric = metric
        self.checkpoints_dir = self.run_dir / "checkpoints"

    # ------------------------------------------------------------------ set-up

    def _loaders(self, accelerator: Accelerator) -> tuple[DataLoader, DataLoader | None, torch.Generator]:
        # The shuffle order comes from this generator alone, reseeded per epoch, so it never
        # depends on how many random numbers the model drew before (exact resume).
        generator = torch.Generator()
        if self.train_sampler is not None:
            train_loader = DataLoader(
                self.train_data, batch_sampler=self.train_sampler(generator), collate_fn=self.collate_fn
            )
        else:
            train_loader = DataLoader(
                self.train_data,
                batch_size=self.settings.batch_size,
                shuffle=True,
                generator=generator,
                drop_last=False,
                collate_fn=self.collate_fn,
            )
        eval_loader = None
        if self.eval_data is not None:
            eval_loader = DataLoader(
                self.eval_data[1],
                batch_size=self.settings.eval_batch_size,
                shuffle=False,
                collate_fn=self.collate_fn,
            )
            eval_loader = accelerator.prepare(eval_loader)
        return accelerator.prepare(train_loader), eval_loader, generator

    def _resume_state(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> tuple[int, int, Path | None]:
        """Load the latest checkpoint into model/optimizer/scheduler; return (next epoch, step, folder)."""
        folder = latest_checkpoint(self.checkpoints_dir)
        if folder is None:
            return 0, 0, None
        state, optimizer_state = read_checkpoint(folder, self.objective.parts(model))
        if optimizer_state is None:  # a finished stage kept its weights only: nothing left to train
            if state["epoch"] + 1 < self.settings.epochs:
                raise ValueError(
                    f"{folder}: this stage finished after {state['epoch'] + 1} epochs and kept its weights only "
                    f"(train.keep_when_done: weights), so it cannot resume to {self.settings.epochs} epochs; "
                    "start it afresh, or keep whole checkpoints with train.keep_when_done: all"
                )
            return self.settings.epochs, state["step"], folder
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(state["scheduler"])
        self._truncate_metrics(state["epoch"])
        return state["epoch"] + 1, state["step"], folder

    def _truncate_metrics(self, last_epoch: int) -> None:
        """Drop log records of epochs after the checkpoint: they are about to be re-run."""
        path = self.run_dir / METRICS_FILE
        if not path.exists():
            return
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("epoch", 0) <= last_epoch
        ]
        path.write_text("".join(line + "\n" for line in kept))

    def _log(self, record: dict, accelerator: Accelerator | None = None) -> None:
        with open(self.run_dir / METRICS_FILE, "a") as stream:
            stream.write(json.dumps(record) + "\n")
        if accelerator is not None and self.settings.log_with:
            # the same record for the tracker: numbers only, named by event (train/total, epoch/eval_accuracy)
            numbers = {
                f"{record['event']}/{name}": value
                for name, value in record.items()
                if isinstance(value, (int, float)) and name not in ("epoch", "step")
            }
            accelerator.log(numbers, step=record["step"])

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to the last epoch; return the final epoch's record (train loss and eval metrics)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run_stages(resume)
        settings = self.settings
        accelerator = fresh_accelerator(settings, self.run_dir)
        model = self.objective.trainable
        optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], settings)
        train_loader, eval_loader, generator = self._loaders(accelerator)
        steps_per_epoch = math.ceil(len(train_loader) / settings.grad_accum_steps)
        total_steps = steps_per_epoch * settings.epochs
        if settings.lr_schedule.warmup_steps >= total_steps:
            warnings.warn(
                f"{self.description}: lr_schedule.warmup_steps is {settings.lr_schedule.warmup_steps} but the run has "
                f"{total_steps} steps, so the learning rate never reaches optimizer.lr; lower warmup_steps",
                stacklevel=2,
            )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: settings.lr_schedule.factor(step, total_steps)
        )
        start_epoch, step, folder = self._resume_state(model, optimizer, scheduler) if resume else (0, 0, None)
        if folder is not None and start_epoch >= settings.epochs:
            return json.loads((folder / "state.json").read_text())["final"]
        if folder is not None:
            restore_checkpoint_rng(folder)
        model, optimizer = accelerator.prepare(model, optimizer)
        if settings.log_with:
            accelerator.init_trackers(settings.log_with)  # <run_dir>/tensorboard
        self.objective.to(accelerator.device)
        unwrapped = accelerator.unwrap_model(model)
        constrained = self.objective.parts(unwrapped)["model"]
        after_step = getattr(self.objective, "after_step", None)
        before_step = getattr(self.objective, "before_optimizer_step", None)
        record: dict[str, Any] = {}
        with TrainingProgress(
            self.description,
            settings.epochs,
            len(train_loader),
            enabled=self.show_progress and accelerator.is_main_process,
            line_every=settings.log_every,
            f1_label=getattr(self.metric, "label", "F1"),
        ) as progress:
            for epoch in range(start_epoch, settings.epochs):
                generator.manual_seed(self.seed * 100_003 + epoch)
                started = time.perf_counter()
                progress.start_epoch(epoch)
                model.train()
                loss_sum, batches = 0.0, 0
                for raw in train_loader:
                    batch = self._prepare(as_batch(raw))
                    with accelerator.accumulate(model):
                        with accelerator.autocast():
                            terms = self.objective.losses(model, batch, step, total_steps)
                        values = {name: float(value.detach()) for name, value in terms.items()}
                        if not math.isfinite(values["total"]):
                            raise self._non_finite(values, epoch, step)
                        accelerator.backward(terms["total"])
                        if accelerator.sync_gradients and settings.grad_clip:
                            accelerator.clip_grad_norm_(model.parameters(), settings.grad_clip)
                        # the objective's own hook sees the gradients (RigL regrows by them) and may skip the step
                        skip = accelerator.sync_gradients and before_step is not None
                        if not (skip and before_step(step + 1, total_steps, optimizer)):
                            optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    if accelerator.sync_gradients:
                        scheduler.step()
                        step += 1
                        if settings.max_norm:
                            apply_max_norm(constrained, settings.max_norm)
                        if after_step is not None:  # the objective's own hook: pruning masks, sparse training
                            after_step(step, total_steps)
                        if step % settings.log_every == 0 and accelerator.is_main_process:
                            self._log(
                                {
                                    "event": "step",
                                    "epoch": epoch,
                                    "step": step,
                                    "lr": scheduler.get_last_lr()[0],
                                    **values,
                                },
                                accelerator,
                            )
                    loss_sum, batches = loss_sum + values["total"], batches + 1
                    progress.advance(values, examples=batch.labels.shape[0], step=step)
                record = {
                    "event": "epoch",
                    "epoch": epoch,
                    "step": step,
                    "train_loss": loss_sum / max(1, batches),
                    "seconds": time.perf_counter() - started,
                }
                if eval_loader is not None:
                    model.eval()
                    metrics = evaluate(
                        lambda inputs: self.objective.predict(unwrapped, inputs),
                        eval_loader,
                        accelerator.gather_for_metrics,
                        self.metric,
                    )
                    record.update(
                        {
                            "eval_split": self.eval_data[0],
                            **{f"eval_{name}": value for name, value in metrics.items() if name != "examples"},
                        }
                    )
                progress.end_epoch(record)
                if accelerator.is_main_process:
                    self._log(record, accelerator)
                    self._checkpoint(unwrapped, optimizer, scheduler, epoch, step, record)
                accelerator.wait_for_everyone()
        if settings.log_with:
            accelerator.end_training()  # flushes and closes the event file
        return record

    def _run_stages(self, resume: bool) -> None:
        """Pre-training stages the objective declares (``distill.core.objective.Stage``), each a full run."""
        stages = getattr(self.objective, "stages", None)
        for stage in stages() if stages else []:
            Trainer(
                stage.objective,
                self.train_data,
                self.eval_data,
                self.settings.model_copy(update={"epochs": stage.epochs}),
                self.run_dir / f"stage-{stage.name}",
                seed=self.seed,
                recipe=self.recipe,
                input_transform=self.input_transform,
                show_progress=self.show_progress,
                description=f"{self.description} {stage.name}",
                collate_fn=self.collate_fn,
                train_sampler=self.train_sampler,
                metric=self.metric,
            ).fit(resume)
            stage.finish()

    def _prepare(self, batch: Batch) -> Batch:
        """Jitter the batch once, so the teacher and the student see the same transformed inputs."""
        if self.input_transform is None:
            return batch
        return batch.map_inputs(self.input_transform)

    def _checkpoint(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch: int,
        step: int,
        record: dict,
    ) -> None:
        done = epoch == self.settings.epochs - 1
        state = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "seed": self.seed,
            "recipe": self.recipe,
            "done": done,
            "final": record,
        }
        write_checkpoint(
            self.checkpoints_dir,
            epoch,
            self.objective.parts(model),
            optimizer.state_dict(),
            state,
            keep_last=self.settings.keep_checkpoints,
            weights_only=done and self.settings.keep_when_done == "weights",
            optimizer_in_newest_only=self.settings.keep_optimizer_state == "newest",
        )

    def _non_finite(self, values: dict[str, float], epoch: int, step: int) -> NonFiniteLossError:
        folder = latest_checkpoint(self.checkpoints_dir)
        where = f"the last good checkpoint is {folder}" if folder else "no checkpoint was written yet"
        terms = ", ".join(f"{name}={value:.4g}" for name, value in values.items())
        return NonFiniteLossError(
            f"loss is not finite at optimizer step {step} (epoch {epoch}): {terms}; training stopped and {where}. "
            "Lower optimizer.lr, set train.grad_clip, or check the inputs for NaN, then resume with --resume."
        )
