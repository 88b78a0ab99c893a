"""Recipes: YAML files validated by pydantic, with errors that name the key path and what is allowed.

A recipe describes a whole experiment: data, teacher, student, how to distil and how to train.
See ``distill/recipes/*.yaml`` for annotated examples. ``key.path=value`` overrides (the CLI's
extra arguments) are applied to the YAML before validation, so they are checked the same way.
"""

from __future__ import annotations

import difflib
import itertools
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from distill import losses as loss_registry
from distill.core.connectors import CONNECTOR_KINDS
from distill.core.matches import check_options
from distill.core.schedules import Schedule
from distill.models.build import ModelSpec
from distill.names import unknown_name_message
from distill.train.settings import StrictModel, TrainSettings

ScheduleOrNumber = float | Schedule
LAYER_KINDS = ("hidden", "attention", "scores", "values")
TEXT_DATASETS = ("sst2", "conll2003")


class RecipeError(ValueError):
    """A recipe that does not validate; the message has one line per problem, each with its key path."""


def _check_loss_name(name: str) -> str:
    """pydantic reports ValueError with the key path; the registry's KeyError would escape it."""
    if name not in loss_registry.names():
        raise ValueError(unknown_name_message("loss", name, loss_registry.names()))
    return name


class DataSpec(StrictModel):
    dataset: str = "digits"
    data_dir: str | None = None  # folder of the dataset files; relative paths are taken from the working directory
    val_size: int = Field(0, ge=0)  # examples held out of train for per-epoch evaluation (0: evaluate on test)
    train_subset: int | None = Field(None, ge=1)  # keep this many training examples (stratified)
    split_seed: int = 0  # seeds the val/subset draw, not training, so every student sees the same examples
    max_length: int = Field(128, ge=8)  # text datasets: tokens kept per example


class EnsembleSpec(StrictModel):
    """An ensemble teacher: ``members`` models (seeds teacher.seed, +1, ...) or the listed architectures."""

    members: int = Field(1, ge=1)  # copies of teacher.model trained with different seeds
    models: list[ModelSpec] = Field(default_factory=list)  # or: one member per architecture listed here
    space: Literal["probability", "logits"] = "probability"  # average softmax outputs, or logits
    weights: list[float] | None = None  # one per member, >= 0; default equal

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleSpec:
        if self.models and self.members not in (1, len(self.models)):
            raise ValueError(f"give members ({self.members}) or models ({len(self.models)} listed), not both")
        count = self.size
        if self.weights is not None and (len(self.weights) != count or any(w < 0 for w in self.weights)):
            raise ValueError(f"weights: need {count} numbers >= 0 (one per member), got {self.weights}")
        return self

    @property
    def size(self) -> int:
        return len(self.models) or self.members


class TeacherSpec(StrictModel):
    model: ModelSpec = ModelSpec(hidden=[512, 512])
    checkpoint: str | None = None  # a trained teacher (.safetensors or checkpoint folder): skips teacher training
    seed: int = 0
    train: TrainSettings = TrainSettings()
    ensemble: EnsembleSpec | None = None  # several teachers, averaged (Hinton et al. 2015)


class StudentSpec(StrictModel):
    model: ModelSpec = ModelSpec(hidden=[32])
    train: TrainSettings = TrainSettings()  # used for the hard-label baseline and the distilled student alike
    baseline: bool = True  # also train the student on hard labels alone, from the same initialisation
    # teacher-assistant chain: the assistants between teacher and student, largest first; each step uses
    # distill:. hf students list layer counts ([4]: 6 -> 4 -> student), others list models ([{hidden: [400]}]).
    chain: list[int] | list[ModelSpec] = Field(default_factory=list)


class MatchSpec(StrictModel):
    student: str | list[str]  # a dotted module name, or several (paired with the teacher's, in order)
    teacher: str | list[str]
    loss: str = "hidden_mse"
    weight: ScheduleOrNumber | list[ScheduleOrNumber] = 1.0  # one, or one per layer pair
    connector: str | None = None
    connector_hidden: int | None = Field(None, ge=1)
    name: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the loss, e.g. {p: 2}
    stage: Literal["main", "pretrain", "both"] | None = None  # default: the loss's own (AB, FSP: pretrain)
    pretrain_epochs: int | None = Field(None, ge=1)
    # hf models: pair every student layer of kind `student` (hidden | attention | scores | values) with a
    # teacher layer by this strategy (skip | uniform | last | list), whatever the depths; `embeddings` adds
    # hidden:0 <- hidden:0.
    layer_map: Literal["skip", "uniform", "last"] | list[int] | None = None
    embeddings: bool = False

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, value: str) -> str:
        return _check_loss_name(value)

    @field_validator("connector")
    @classmethod
    def _known_connector(cls, value: str | None) -> str | None:
        if value is not None and value not in CONNECTOR_KINDS:
            raise ValueError(unknown_name_message("connector", value, list(CONNECTOR_KINDS)))
        return value

    @model_validator(mode="after")
    def _known_options(self) -> MatchSpec:
        check_options(self.loss, self.options, "options")
        if self.layer_map is not None and (self.student != self.teacher or self.student not in LAYER_KINDS):
            raise ValueError(
                f"with layer_map, student and teacher name one layer kind of {list(LAYER_KINDS)}, "
                f"the same on both sides; got student {self.student!r}, teacher {self.teacher!r}"
            )
        if self.embeddings and (self.layer_map is None or self.student != "hidden"):
            raise ValueError("embeddings: true applies to hidden-state matches with a layer_map")
        return self


class DistillSpec(StrictModel):
    response_loss: str | None = "kd"
    response_options: dict[str, Any] = Field(default_factory=dict)  # e.g. dkd: {alpha: 1, beta: 8}
    temperature: ScheduleOrNumber = 4.0
    kd_weight: ScheduleOrNumber = 1.0
    hard_weight: ScheduleOrNumber = 0.0
    matches: list[MatchSpec] = Field(default_factory=list)

    @field_validator("response_loss")
    @classmethod
    def _known_loss(cls, value: str | None) -> str | None:
        return value if value is None else _check_loss_name(value)

    @model_validator(mode="after")
    def _known_options(self) -> DistillSpec:
        if self.response_loss:
            check_options(self.response_loss, self.response_options, "response_options")
        elif self.response_options:
            raise ValueError("response_options given but response_loss is null")
        return self


class StrategySpec(StrictModel):
    """How teachers and students are run (the default, offline, is one frozen teacher -> student)."""

    kind: Literal["offline", "mutual", "self_distill", "born_again"] = "offline"
    peers: int = Field(2, ge=2)  # mutual: cohort size; the peers are student.model with seeds s, s+1000, ...
    generations: int = Field(3, ge=1)  # born_again: students after generation 0 (the teacher)
    ensemble_generations: bool = True  # born_again: also score the ensemble of all generations
    alpha: float = Field(0.3, ge=0, le=1)  # self_distill: weight of the deepest exit's soft targets
    feature_weight: float = Field(0.03, ge=0)  # self_distill: weight of the feature hint to the deepest exit
    temperature: float | None = Field(None, gt=0)  # softening of the peers' targets; default mutual 1, self_distill 3
    tree_loss: Literal["mixture", "path_weighted"] = "mixture"  # tree students: see SoftTreeObjective


class TransferSpec(StrictModel):
    """What the student distils on: the labelled train set (default), or data without labels."""

    labels: bool = True  # false: the student sees the teacher's soft targets only (labels set to -100)
    # unseen: the train set is split; the teacher trains on teacher_share of it, the student on the rest
    split: Literal["shared", "unseen"] = "shared"
    teacher_share: float = Field(0.5, gt=0, lt=1)


class Recipe(StrictModel):
    name: str = "experiment"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # one distilled (and baseline) student per seed
    data: DataSpec = DataSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    distill: DistillSpec = DistillSpec()
    strategy: StrategySpec = StrategySpec()
    transfer: TransferSpec = TransferSpec()

    @model_validator(mode="after")
    def _strategy_fits(self) -> Recipe:
        strategy, text = self.strategy.kind, self.data.dataset in TEXT_DATASETS
        if strategy != "offline" and text:
            raise ValueError(f"strategy.kind {strategy!r} runs on tensor datasets; text recipes use offline")
        if strategy == "born_again" and self.student.model != self.teacher.model:
            raise ValueError("strategy born_again: student.model must equal teacher.model (same architecture)")
        if strategy == "self_distill" and self.student.model.kind not in ("mlp", "cnn1d"):
            kind = self.student.model.kind
            raise ValueError(f"strategy self_distill needs student.model.kind mlp or cnn1d, got {kind!r}")
        if strategy != "offline" and (self.teacher.ensemble or self.student.chain):
            raise ValueError(f"strategy {strategy!r} cannot be combined with teacher.ensemble or student.chain")
        if not self.transfer.labels and self.distill.hard_weight != 0:
            raise ValueError("transfer.labels is false: distill.hard_weight must be 0 (the student has no labels)")
        if (self.transfer.split != "shared" or not self.transfer.labels) and strategy in ("mutual", "self_distill"):
            raise ValueError(f"strategy {strategy!r} trains on labels: transfer applies to teacher -> student runs")
        if self.teacher.ensemble and text:
            raise ValueError("teacher.ensemble applies to tensor datasets; text recipes distil one teacher")
        if self.teacher.ensemble and self.distill.matches:
            raise ValueError("teacher.ensemble: feature matches need one teacher's layers; use response losses only")
        return self

    @model_validator(mode="after")
    def _text_needs_transformers(self) -> Recipe:
        text = self.data.dataset in TEXT_DATASETS
        kinds = {"teacher.model.kind": self.teacher.model.kind, "student.model.kind": self.student.model.kind}
        for where, kind in kinds.items():
            if text != (kind == "hf"):
                need = "hf" if text else "mlp, cnn or cnn1d"
                raise ValueError(f"{where} is {kind!r} but dataset {self.data.dataset!r} needs {need}")
        if text and self.student.model.layers is None:
            raise ValueError("student.model.layers: an hf student needs its number of layers")
        chain = self.student.chain
        if chain and text != all(isinstance(step, int) for step in chain):
            need = "layer counts, e.g. [4]" if text else "model blocks, e.g. [{kind: mlp, hidden: [400]}]"
            raise ValueError(f"student.chain: for dataset {self.data.dataset!r} list {need}")
        depths = [*chain, self.student.model.layers]
        if text and chain and any(b >= a for a, b in itertools.pairwise(depths)):
            raise ValueError(f"student.chain must shrink step by step down to the student, got {depths}")
        return self


# ---------------------------------------------------------------- errors


def _key_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("float", "Schedule", "constrained-float") or "[" in str(part):
            continue  # pydantic names union members in the location; users never wrote them
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``location`` (the parent of an unknown key) accepts."""
    model: Any = Recipe
    for part in location[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        model = next((arg for arg in inner if isinstance(arg, type) and issubclass(arg, BaseModel)), None)
    return sorted(model.model_fields) if model is not None else []


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} problem(s)"]
    for item in error.errors():
        path = _key_path(item["loc"])
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(item["loc"])
            key = str(item["loc"][-1])
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {path}: unknown key{hint}; allowed keys here: {', '.join(allowed)}")
            continue
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {path}: {message} (got {item['input']!r})")
    return "\n".join(lines)


# ---------------------------------------------------------------- loading


def builtin_recipes() -> list[str]:
    folder = resources.files("distill") / "recipes"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a built-in recipe (``digits-demo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = resources.files("distill") / "recipes" / f"{path.name.removesuffix('.yaml')}.yaml"
    if builtin.is_file():
        return Path(str(builtin))
    raise RecipeError(f"no recipe file {str(path)!r}; built-in recipes: {', '.join(builtin_recipes())}")


def apply_override(raw: dict, assignment: str) -> None:
    """Apply ``key.path=value`` (value parsed as YAML; list items addressed by index: ``matches.0.weight``)."""
    if "=" not in assignment:
        raise RecipeError(f"override {assignment!r} is not of the form key.path=value (e.g. train.epochs=3)")
    key_path, text = assignment.split("=", 1)
    keys = key_path.strip().split(".")
    node: Any = raw
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise RecipeError(f"override {key_path!r}: {where} needs an index below {len(node)}")
            key = int(key)
        elif not isinstance(node, dict):
            raise RecipeError(f"override {key_path!r}: {'.'.join(keys[:depth])} is a value, not a section")
        if last:
            node[key] = yaml.safe_load(text)
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, dict]:
    """Read, override and validate a recipe; return the model and the raw dict (stored in checkpoints)."""
    path = resolve_recipe_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(
            f"{path}: a recipe is a mapping of sections (data, teacher, student, distill), got {type(raw).__name__}"
        )
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_recipe(raw, str(path)), raw


def validate_recipe(raw: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        raise RecipeError(format_validation_error(error, source)) from None
