"""The training loop, on Hugging Face Accelerate (devices, DDP, mixed precision, gradient accumulation).

One loop trains teachers, baselines and distilled students: what differs is the *objective*
(see ``distiller.py``). Each epoch ends with an evaluation, a line in ``metrics.jsonl`` and an
atomic checkpoint; ``fit(resume=True)`` continues from the last checkpoint exactly (same data
order, same dropout and jitter draws), so a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.core.batch import Batch
from distill.core.evaluation import Metric, evaluate
from distill.train.checkpoint import write_checkpoint
from distill.train.fsdp import enable_on_cpu, fsdp_plugin, fsdp_record, host_copy, load_optimizer_state
from distill.train.guard import NonFiniteLossError, check_before_checkpoint
from distill.train.loop import EpochLoop
from distill.train.memory import enable_gradient_checkpointing
from distill.train.metrics_log import METRICS_FILE, append_record, truncate_after
from distill.train.progress import TrainingProgress, notice
from distill.train.resume import CheckpointError, Resumable, find_resumable, read_checkpoint, restore_checkpoint_rng
from distill.train.rng import preserved_rng
from distill.train.settings import TrainSettings
from distill.train.signals import StopRequest, TrainingInterrupted, stop_on_signals
from distill.train.world import check_joined

__all__ = ["METRICS_FILE", "NonFiniteLossError", "Trainer", "TrainingInterrupted", "build_optimizer", "evaluate"]


TRAINER_KEYS = ("scheduler", "final")  # state.json keys the Trainer adds to every checkpoint


@dataclass
class Position:
    """Where training (re)starts: the epoch, the optimizer step, and inside the epoch the loader batches
    already trained on with their summed loss (a step checkpoint's; zero at an epoch's start)."""

    epoch: int = 0
    step: int = 0
    batches_done: int = 0
    loss_sum: float = 0.0
    found: Resumable | None = None
    optimizer_state: dict | None = None  # loaded once the optimizer's parameters are prepared (maybe sharded)


def fresh_accelerator(
    settings: TrainSettings, run_dir: Path | None = None, model: nn.Module | None = None
) -> Accelerator:
    """An Accelerator for this run; the singletons a previous run left behind are reset first.

    Accelerate keeps process-wide state and refuses a second Accelerator with other settings,
    but a pipeline trains several models (teacher, baselines, students) in one process.
    ``model``: the module to train, which ``train.fsdp`` shards (its layer classes name the units).
    """
    AcceleratorState._reset_state()
    GradientState._reset_state()
    plugin = fsdp_plugin(settings.fsdp, model) if settings.fsdp is not None and model is not None else None
    accelerator = Accelerator(
        fsdp_plugin=plugin,
        cpu=settings.cpu,
        mixed_precision=settings.mixed_precision,
        gradient_accumulation_steps=settings.grad_accum_steps,
        log_with=settings.log_with,
        project_dir=run_dir if settings.log_with else None,
    )
    check_joined(accelerator.num_processes)  # under torchrun: one run in N processes, not N runs
    if plugin is not None:
        enable_on_cpu(accelerator, plugin)
    return accelerator


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
        eval_batch_size: int | None = None,
    ) -> None:
        self.objective = objective
        # a task may bound it (a causal LM: each batch's logits are batch x length x vocabulary floats)
        self.eval_batch_size = eval_batch_size or settings.eval_batch_size
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
                batch_size=self.eval_batch_size,
                shuffle=False,
                collate_fn=self.collate_fn,
            )
            eval_loader = accelerator.prepare(eval_loader)
        return accelerator.prepare(train_loader), eval_loader, generator

    def _find_checkpoint(self, resume: bool | str) -> Resumable | None:
        """The checkpoint to resume from: the newest that verifies, or the one ``resume`` names (e.g.
        ``epoch-0002``) in a stage that is not finished yet; a finished stage keeps its final checkpoint."""
        choose = resume if isinstance(resume, str) else None
        if choose and (self.checkpoints_dir / Path(choose).name).is_dir():
            found = find_resumable(self.checkpoints_dir, choose, TRAINER_KEYS)
        else:
            found = find_resumable(self.checkpoints_dir, required=TRAINER_KEYS)
            if choose and found is not None and not found.state["done"]:
                find_resumable(self.checkpoints_dir, choose, TRAINER_KEYS)  # raises: names the checkpoints there are
        for note in found.skipped if found else []:
            notice(f"{self.description}: {note}")
        if found is not None and found.skipped:
            notice(f"{self.description}: resuming from {found.folder}")
        return found

    def _resume_state(
        self,
        resume: bool | str,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> Position:
        """Load the checkpoint into model/optimizer/scheduler; return where training continues."""
        found = self._find_checkpoint(resume)
        if found is None:
            return Position()
        state = found.state
        optimizer_state = read_checkpoint(found, self.objective.parts(model))
        if optimizer_state is None:  # a finished stage kept its weights only: nothing left to train
            if state["epoch"] + 1 < self.settings.epochs:
                raise ValueError(
                    f"{found.folder}: this stage finished after {state['epoch'] + 1} epochs and kept its weights "
                    f"only (train.keep_when_done: weights), so it cannot resume to {self.settings.epochs} epochs; "
                    "start it afresh, or keep whole checkpoints with train.keep_when_done: all"
                )
            return Position(self.settings.epochs, state["step"], found=found)
        scheduler.load_state_dict(state["scheduler"])
        truncate_after(self.run_dir / METRICS_FILE, state["step"])
        inside = state.get("step_in_epoch")
        if inside is None:
            return Position(state["epoch"] + 1, state["step"], found=found, optimizer_state=optimizer_state)
        return Position(state["epoch"], state["step"], inside, state["epoch_loss_sum"], found, optimizer_state)

    def _log(self, record: dict, accelerator: Accelerator | None = None) -> None:
        append_record(self.run_dir / METRICS_FILE, record)
        if accelerator is not None and self.settings.log_with:
            # the same record for the tracker: numbers only, named by event (train/total, epoch/eval_accuracy)
            numbers = {
                f"{record['event']}/{name}": value
                for name, value in record.items()
                if isinstance(value, (int, float)) and name not in ("epoch", "step")
            }
            accelerator.log(numbers, step=record["step"])

    # ------------------------------------------------------------------ the loop

    def fit(self, resume: bool | str = False) -> dict[str, Any]:
        """Train to the last epoch; return the final epoch's record (train loss and eval metrics).

        ``resume``: continue from the newest checkpoint that verifies, or (a name such as ``epoch-0002``)
        from that checkpoint of the stage that is not finished yet. SIGTERM/SIGINT write a checkpoint after
        the current optimizer step and raise TrainingInterrupted.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._run_stages(resume)
        settings = self.settings
        model = self.objective.trainable
        accelerator = fresh_accelerator(settings, self.run_dir, model)
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(model)
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
        position = self._resume_state(resume, model, optimizer, scheduler) if resume else Position()
        if position.found is not None and position.epoch >= settings.epochs:
            return position.found.state["final"]
        if position.found is not None:
            restore_checkpoint_rng(position.found)
        host = host_copy(self.objective, accelerator, model, self.description)
        model, optimizer = accelerator.prepare(model, optimizer)
        if position.optimizer_state is not None:
            load_optimizer_state(optimizer, position.optimizer_state)
        if host is not None and accelerator.is_main_process:  # what FSDP sharded, for the user to check
            self._log(fsdp_record(model, accelerator.num_processes, position.step))
        if settings.log_with:
            accelerator.init_trackers(settings.log_with)  # <run_dir>/tensorboard
        self.objective.to(accelerator.device)
        loop = EpochLoop(self, accelerator, model, optimizer, scheduler, total_steps, host)
        with (
            TrainingProgress(
                self.description,
                settings.epochs,
                len(train_loader),
                enabled=self.show_progress and accelerator.is_main_process,
                line_every=settings.log_every,
                f1_label=getattr(self.metric, "label", "F1"),
            ) as progress,
            stop_on_signals() as stop,
        ):
            record: dict[str, Any] = {}
            step = position.step
            for epoch in range(position.epoch, settings.epochs):
                generator.manual_seed(self.seed * 100_003 + epoch)
                skip = position.batches_done if epoch == position.epoch else 0
                record, step = loop.epoch(
                    epoch, step, train_loader, skip, position.loss_sum if skip else 0.0, progress, stop
                )
                if eval_loader is not None:
                    model.eval()
                    with preserved_rng():  # evaluation never changes what training draws next
                        metrics = evaluate(
                            lambda inputs: self.objective.predict(loop.unwrapped, inputs),
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
                parts, optimizer_state = loop.snapshot()  # every process: under FSDP this gathers the shards
                if accelerator.is_main_process:
                    check_before_checkpoint(parts, record, epoch, step, self._last_good())
                    self._log(record, accelerator)
                    folder = self._checkpoint(parts, optimizer_state, scheduler, epoch, step, record)
                accelerator.wait_for_everyone()
                if stop.requested:
                    raise self._interrupted(stop, epoch, step, folder if accelerator.is_main_process else None)
        if settings.log_with:
            accelerator.end_training()  # flushes and closes the event file
        if host is not None:
            host.replace(model)  # the objective and the runner go on with plain modules and whole weights
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
        parts: dict[str, nn.Module],
        optimizer_state: dict,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        epoch: int,
        step: int,
        record: dict,
        inside: tuple[int, float] | None = None,
    ) -> Path:
        """The end-of-epoch checkpoint, or with ``inside`` = (loader batches done, their summed loss) a step
        checkpoint within ``epoch``."""
        done = inside is None and epoch == self.settings.epochs - 1
        state = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "seed": self.seed,
            "recipe": self.recipe,
            "done": done,
            "final": record,
        }
        if inside is not None:
            state["epoch_loss_sum"] = inside[1]
        return write_checkpoint(
            self.checkpoints_dir,
            epoch,
            parts,
            optimizer_state,
            state,
            keep_last=self.settings.keep_checkpoints,
            weights_only=done and self.settings.keep_when_done == "weights",
            optimizer_in_newest_only=self.settings.keep_optimizer_state == "newest",
            step_in_epoch=None if inside is None else inside[0],
        )

    def _last_good(self) -> Path | None:
        try:
            found = find_resumable(self.checkpoints_dir, required=TRAINER_KEYS)
        except CheckpointError:
            return None
        return found.folder if found else None

    def _interrupted(self, stop: StopRequest, epoch: int, step: int, folder: Path | None) -> TrainingInterrupted:
        written = f"checkpoint {folder} written" if folder else "the main process wrote the checkpoint"
        return TrainingInterrupted(
            f"{self.description}: stopped by {stop.name} after optimizer step {step} (epoch {epoch + 1}); {written}; "
            "run the same command with --resume to continue exactly where it stopped",
            stop.signal_number or 0,
        )
