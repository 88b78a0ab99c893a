"""What a strategy works with: the recipe, the task, and the one way to build, train and score models.

:class:`RunContext` keeps the run folder's conventions in one place (``<out>/teacher/``,
``<out>/seed-<s>/<role>/``), trains with the recipe's settings for each role, and turns the recipe's
``distill:`` block into the objective between any teacher and student, so every strategy runs on
every task through the same calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import default_collate

from distill.core.batch import reads_teacher_encoding
from distill.core.cache import TeacherCache
from distill.core.disk_cache import check_cache_fits
from distill.core.distiller import Distiller, FeatureMatch, SupervisedObjective
from distill.core.schedules import as_schedule
from distill.models.registry import ModelSpec, build_model
from distill.strategies.rows import Row
from distill.tasks.base import Task
from distill.train.checkpoint import load_module_weights
from distill.train.resume import latest_checkpoint
from distill.train.trainer import Trainer


@dataclass
class TeacherModel:
    """The teacher of a run: the model, its weights files and, for an ensemble, one row per member."""

    model: nn.Module
    weights: list[Path]
    members: list[Row] = field(default_factory=list)


def weights_of(run_dir: Path) -> Path:
    """The model weights of a finished stage: its latest checkpoint's ``model.safetensors``."""
    folder = latest_checkpoint(run_dir / "checkpoints")
    if folder is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint; the stage did not finish")
    return folder / "model.safetensors"


def checkpoint_weights(path: str | Path) -> Path:
    """The weights file a user's checkpoint names: a .safetensors file, or a folder's model.safetensors."""
    path = Path(path)
    return path / "model.safetensors" if path.is_dir() else path


@dataclass
class RunContext:
    recipe: Any  # distill.run.recipe.Recipe (not imported: the run layer sits above strategies)
    raw: dict
    out: Path
    task: Task
    resume: bool | str = False  # a checkpoint name (epoch-0002): resume the unfinished stage from it
    show_progress: bool = True
    teacher_task: Task | None = None  # what the teacher trains on, when not the task (transfer sets)
    _teacher: TeacherModel | None = None
    # one cache per teacher and training set, shared by every seed; the key holds both objects so that
    # neither can be freed and its id reused by another teacher (a later seed's assistant) while cached
    _caches: dict[tuple[int, int], tuple[Any, TeacherCache]] = field(default_factory=dict)
    _top_k_caches: dict[tuple[int, int], tuple[Any, Any]] = field(default_factory=dict)  # the same, causal LMs
    _output_caches: dict[tuple, tuple[Any, Any]] = field(default_factory=dict)  # teacher.cache on disk, per capture

    # ------------------------------------------------------------------ models

    def build(self, spec: ModelSpec, seed: int, source: nn.Module | None = None, task: Task | None = None) -> nn.Module:
        """A fresh model of ``spec``, initialised from ``seed`` (derived from ``source`` where the kind does)."""
        torch.manual_seed(seed)
        return build_model(spec, (task or self.task).model_context(seed, source))

    def build_student(self, seed: int, source: nn.Module | None = None, spec: ModelSpec | None = None) -> nn.Module:
        return self.build(spec or self.recipe.student.model, seed, source)

    def chain_specs(self) -> list[ModelSpec]:
        """``student.chain`` as model specs: a number is the student's spec with that many layers."""
        student = self.recipe.student.model
        return [
            step if isinstance(step, ModelSpec) else student.model_copy(update={"layers": step})
            for step in self.recipe.student.chain
        ]

    # ------------------------------------------------------------------ training

    def train(
        self,
        objective: Any,
        run_dir: Path,
        seed: int,
        label: str,
        role: str = "student",
        task: Task | None = None,
        settings: Any = None,
        evaluate: bool = True,
    ) -> dict:
        """Train ``objective`` into ``run_dir`` (resumable) with ``settings``, by default the recipe's
        ``<role>.train``; ``evaluate=False`` skips the per-epoch evaluation (benchmarks score at the end)."""
        task = task or self.task
        settings = settings or getattr(self.recipe, role).train
        needs_index = getattr(objective, "needs_index", False)
        trainer = Trainer(
            objective,
            eval_data=task.eval_split() if evaluate else None,
            settings=settings,
            run_dir=run_dir,
            seed=seed,
            recipe=self.raw,
            show_progress=self.show_progress,
            description=label,
            **task.trainer_options(settings, needs_index),
        )
        return trainer.fit(resume=self.resume)

    def seed_dir(self, seed: int) -> Path:
        return self.out / f"seed-{seed}"

    def row(self, role: str, seed: int, model: nn.Module, run_dir: Path | None = None, index: int | None = None) -> Row:
        """Score ``model`` on the task and record it (with its weights file when ``run_dir`` trained it)."""
        weights = weights_of(run_dir) if run_dir is not None else None
        return Row(role, seed, self.task.score(model), model, index, weights)

    # ------------------------------------------------------------------ the teacher

    def teacher(self) -> TeacherModel:
        """The trained teacher, trained once per run (``teacher.checkpoint`` loads one instead)."""
        if self._teacher is None:
            ensemble = self.recipe.teacher.ensemble  # an EnsembleSpec trains its members itself
            self._teacher = ensemble.train(self) if ensemble is not None else self._single_teacher()
            if getattr(self.recipe.teacher, "cache", None) is not None and _causal_lm(self.task):
                self.top_k_cache(self._teacher.model, self.task)  # filled (or refused) before any student
        return self._teacher

    def top_k_cache(self, teacher: nn.Module, task: Task) -> Any:
        """The recipe's on-disk top-k cache (``teacher.cache``) of ``teacher`` on ``task``'s training data,
        filled where missing, once per run and shared by every seed."""
        from distill.lm.cache import cache_for_task

        key = (id(teacher), id(task.train))
        if key not in self._top_k_caches:
            # several processes fill it together, a shard each (distill.core.shard_store)
            cache = cache_for_task(self.recipe.teacher.cache, self.out, teacher, task)
            self._top_k_caches[key] = ((teacher, task.train), cache)
        return self._top_k_caches[key][1]

    def output_cache(self, teacher: nn.Module, task: Task, names: list[str], progress: Any = None) -> Any:
        """The recipe's on-disk cache (``teacher.cache``) of ``teacher``'s logits and layers ``names`` on
        ``task``'s training data, filled where missing (each process making its share of the shards), once
        per run and shared by every seed and row that captures the same layers."""
        from distill.core.disk_cache import fill_output_cache

        key = (id(teacher), id(task.train), tuple(names))
        if key not in self._output_caches:
            spec = self.recipe.teacher.cache
            options = task.trainer_options(self.recipe.student.train)
            cache = fill_output_cache(
                spec.folder(self.out),
                teacher,
                names,
                options["train_data"],
                options.get("collate_fn") or default_collate,
                batch_size=spec.batch_size,
                shard_examples=spec.shard_examples,
                dtype=spec.dtype,
                progress=progress,
            )
            self._output_caches[key] = ((teacher, task.train), cache)
        return self._output_caches[key][1]

    @property
    def trained_teacher(self) -> TeacherModel | None:
        """The teacher if the strategy used one (mutual learning and BYOT do not)."""
        return self._teacher

    def build_teacher(self, spec: ModelSpec, seed: int, task: Task | None = None) -> nn.Module:
        """A teacher of ``spec``; with two tokenizers it reads its own encoding (the ``teacher_`` keys)."""
        teacher = self.build(spec, seed, task=task)
        return reads_teacher_encoding(teacher) if getattr(self.task, "two_encodings", False) else teacher

    def _single_teacher(self) -> TeacherModel:
        spec = self.recipe.teacher
        task = self.teacher_task or self.task
        teacher = self.build_teacher(spec.model, spec.seed, task=task)
        if spec.checkpoint:
            load_module_weights(teacher, spec.checkpoint)
            return TeacherModel(teacher, [checkpoint_weights(spec.checkpoint)])
        ready = spec.model.trained_weights(task.model_context(spec.seed))
        if ready is not None and "train" not in spec.model_fields_set:  # a fine-tuned model, used as it is
            return TeacherModel(teacher, [ready])
        run_dir = self.out / "teacher"
        self.train(SupervisedObjective(teacher), run_dir, spec.seed, "teacher", role="teacher", task=task)
        return TeacherModel(teacher, [weights_of(run_dir)])

    # ------------------------------------------------------------------ objectives

    def objective(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        spec: ModelSpec | None = None,
        task: Task | None = None,
        attach: bool = True,
    ) -> Any:
        """What ``student`` trains on: its model kind's own objective if it has one (trees, causal LMs), else
        labels alone (no teacher) or the recipe's ``distill:`` block from ``teacher``. ``attach=False`` (the
        pre-flight check) leaves the run's resources alone: an LM objective then fills no teacher cache."""
        spec = spec or self.recipe.student.model
        own = spec.objective(student, teacher, self.recipe.distill)
        on_disk = getattr(self.recipe.teacher, "cache", None)
        if own is not None and on_disk is not None:
            if _causal_lm(task or self.task):
                check_cache_fits(on_disk, causal_lm=True)
            else:
                check_output_cache(on_disk, task or self.task)
        if own is not None:
            attach_to = getattr(own, "attach", None)  # an objective that reads the run (an LM's teacher cache)
            if attach and attach_to is not None:
                attach_to(self, task or self.task)
            return own
        if teacher is None:
            return SupervisedObjective(student)
        return self.distiller(teacher, student, task or self.task, attach)

    def with_distill(self, distill: Any) -> RunContext:
        """This context with another ``distill:`` block (a validated ``DistillSpec``), sharing the task, the
        trained teacher and the teacher caches: how a benchmark compares methods between one teacher and
        one initial student."""
        return dataclasses.replace(self, recipe=self.recipe.model_copy(update={"distill": distill}))

    def distiller(self, teacher: nn.Module, student: nn.Module, task: Task, attach: bool = True) -> Distiller:
        """The recipe's ``distill:`` objective of ``student`` from ``teacher``; with ``teacher.cache`` (and
        ``attach``) it reads the teacher's outputs from disk, filled first where missing."""
        spec = self.recipe.distill
        on_disk = getattr(self.recipe.teacher, "cache", None)
        check_multi_label(task, spec.response_loss, self.recipe.strategy.kind)
        if getattr(task, "two_encodings", False) and spec.matches:
            names = ", ".join(f"{m.student} <- {m.teacher}" for m in spec.matches)
            raise ValueError(
                f"distill.matches ({names}) pair token positions, but the student tokenises otherwise than the "
                "teacher, so positions do not line up; only response KD (logits) works across tokenizers: drop "
                "distill.matches, or use a student with the teacher's tokenizer"
            )
        cache = None
        if task.cache_teacher and on_disk is None:
            key = (id(teacher), id(task.train))
            cache = self._caches.setdefault(key, ((teacher, task.train), TeacherCache()))[1]
        distiller = Distiller(
            teacher,
            student,
            spec.response_loss,
            spec.temperature,
            spec.kd_weight,
            spec.hard_weight,
            feature_matches(spec.matches, student, teacher),
            sample_inputs=task.sample_inputs(),
            response_options=spec.response_options,
            build_context=task.build_context(),
            teacher_cache=cache,
        )
        if on_disk is not None:
            check_output_cache(on_disk, task)
            if attach:
                distiller.teacher_cache = self.output_cache(teacher, task, distiller.teacher_layers)
        return distiller

    def check_distillation(self) -> None:
        """Build teacher, student and their objective untrained: a bad match fails now, not after training."""
        recipe = self.recipe
        teacher = self.build_teacher(recipe.teacher.model, recipe.teacher.seed)  # ensemble members share its kind
        self.objective(teacher, self.build_student(0, source=teacher), attach=False)


def _causal_lm(task: Task) -> bool:
    from distill.tasks.lm import LMTask

    return isinstance(task, LMTask)


def check_output_cache(spec: Any, task: Task) -> None:
    """Refuse ``teacher.cache`` on data whose examples change between epochs, or with a causal LM's options."""
    if not task.cache_teacher:
        raise ValueError(
            f"teacher.cache stores each training example's teacher outputs, but the {task.name} examples may change "
            "between epochs (random jitter of tensor data): drop teacher.cache (the teacher then runs live)"
        )
    check_cache_fits(spec, causal_lm=False)


MULTI_LABEL_LOSSES = ("sigmoid_kd", "logits_mse")  # a softmax over independent yes/no classes is meaningless


def check_multi_label(task: Task, response_loss: str | None, strategy: str) -> None:
    """Multi-label data need a per-class response loss, and the offline strategy (the others use softmax KD)."""
    if getattr(task, "kind", None) != "multilabel":
        return
    if strategy != "offline":
        raise ValueError(
            f"multi-label data: strategy {strategy!r} distils with a softmax over classes; use the offline strategy "
            "with distill.response_loss: sigmoid_kd"
        )
    if response_loss is not None and response_loss not in MULTI_LABEL_LOSSES:
        raise ValueError(
            f"multi-label data: distill.response_loss {response_loss!r} takes a softmax over the classes, but each "
            f"class is its own yes/no decision; use one of {', '.join(MULTI_LABEL_LOSSES)} (or null)"
        )


def feature_matches(specs: list[Any], student: nn.Module, teacher: nn.Module) -> list[FeatureMatch]:
    """The recipe's matches as :class:`FeatureMatch` es; one with a ``layer_map`` pairs every student layer of
    its kind with a teacher layer for these two transformers' depths."""
    matches = []
    for m in specs:
        student_layers, teacher_layers = m.student, m.teacher
        if m.layer_map is not None:
            from distill.capture.hf_structure import layout_of
            from distill.models.hf.student import layer_pairs

            depths = layout_of(student).num_layers, layout_of(teacher).num_layers
            student_layers, teacher_layers = layer_pairs(m.student, *depths, m.layer_map, m.embeddings)
        weight = [as_schedule(w) for w in m.weight] if isinstance(m.weight, list) else as_schedule(m.weight)
        matches.append(
            FeatureMatch(
                student_layers,
                teacher_layers,
                m.loss,
                weight,
                m.connector,
                m.connector_hidden,
                m.name,
                m.options,
                m.stage,
                m.pretrain_epochs,
            )
        )
    return matches


PEER_SEED_STRIDE = 1000  # peer or generation i of seed s is initialised with seed s + 1000 i


def check_single_student(recipe: Any, kind: str) -> None:
    """Strategies that train their own set of networks take no ensemble teacher and no assistant chain."""
    if recipe.teacher.ensemble or recipe.student.chain:
        raise ValueError(f"strategy {kind!r} cannot be combined with teacher.ensemble or student.chain")
