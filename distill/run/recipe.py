"""Recipes: YAML files validated by pydantic, with errors that name the key path and what is allowed.

A recipe describes a whole experiment: data, teacher, student, how to distil and how to train.
See ``distill/recipes/*.yaml`` for annotated examples. ``key.path=value`` overrides (the CLI's
extra arguments) are applied to the YAML before validation, so they are checked the same way.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from distill import losses as loss_registry
from distill.compress import AnyCompressStep
from distill.core.connectors import CONNECTOR_KINDS
from distill.core.disk_cache import TeacherCacheSpec
from distill.core.matches import check_options
from distill.core.schedules import Schedule
from distill.lm.generation import GenerationSpec
from distill.models import AnyModelSpec, MLPSpec, ModelSpec, kinds, spec_class
from distill.names import unknown_name_message
from distill.run.recipe_errors import format_validation_error
from distill.run.recipe_yaml import YAMLProblem, load_recipe_yaml
from distill.sections import LayerName, Text, non_negative, positive
from distill.strategies import AnyStrategySpec, EnsembleSpec, TransferSpec
from distill.strategies.offline import Offline
from distill.tasks.registry import dataset_entry, dataset_names
from distill.train.settings import StrictModel, TrainSettings

ScheduleOrNumber = float | Schedule
Temperature = Annotated[ScheduleOrNumber, positive]
Weight = Annotated[ScheduleOrNumber, non_negative]  # 0 switches a term off
LAYER_KINDS = ("hidden", "attention", "scores", "values")


class RecipeError(ValueError):
    """A recipe that does not validate; the message has one line per problem, each with its key path."""


def _check_loss_name(name: str) -> str:
    """pydantic reports ValueError with the key path; the registry's KeyError would escape it."""
    if name not in loss_registry.names():
        raise ValueError(unknown_name_message("loss", name, loss_registry.names()))
    return name


class DataSpec(StrictModel):
    dataset: str = "digits"  # a registered dataset (distill.tasks.registry)
    data_dir: Text | None = None  # folder of the dataset files; relative paths are taken from the working directory
    val_size: int = Field(0, ge=0)  # examples held out of train for per-epoch evaluation (0: evaluate on test)
    train_subset: int | None = Field(None, ge=1)  # keep this many training examples (stratified)
    eval_subset: int | None = Field(None, ge=1)  # quick runs: a seeded subset of each evaluation split
    split_seed: int = 0  # seeds the val/subset draw, not training, so every student sees the same examples
    max_length: int = Field(128, ge=8)  # text datasets: tokens kept per example
    # your own text files (dataset: files, implied by train): read with Hugging Face datasets
    format: Literal["csv", "tsv", "jsonl", "parquet", "conll"] | None = None
    train: Text | None = None
    validation: Text | None = None  # optional: else data.val_size examples of train, else test
    test: Text | None = None  # optional; scored when given (else validation)
    unlabeled: Text | None = None  # texts without labels: the distilled student also learns from them
    text: Text | list[Text] = "text"  # a column, or two for sentence pairs: [premise, hypothesis]
    label: Text = "label"  # strings or integers; any number of classes; a list per row: multi-label
    # multi-label in CSV/TSV: one column "sports|politics" split on "|"
    label_separator: Annotated[str, Field(min_length=1)] | None = None
    tokens: Text = "tokens"  # tagging from JSONL/CSV/Parquet: the word lists ...
    tags: Text = "tags"  # ... and the tag lists (BIO, BIOES or BMES)
    labels: list[str] | None = None  # label names in id order (default: sorted; integer labels index them)
    scheme: Literal["BIO", "BIOES", "BMES"] | None = None  # tagging: inferred from the tags when not given
    rename: dict[str, str] = Field(default_factory=dict)  # column renames applied to every split
    # language modelling (dataset: lm): prompt/completion pairs when prompt is given, else a corpus (text)
    prompt: Text | None = None
    completion: Text = "completion"
    chat: bool | None = None  # wrap prompts in the tokenizer's chat template (default: when it has one)

    @model_validator(mode="before")
    @classmethod
    def _files_imply_dataset(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("train") is not None and "dataset" not in value:
            return {**value, "dataset": "files"}
        return value

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, value: str) -> str:
        if value not in dataset_names():
            raise ValueError(unknown_name_message("dataset", value, dataset_names()))
        return value

    @model_validator(mode="after")
    def _files_complete(self) -> DataSpec:
        if self.dataset == "lm":
            if not self.train:
                raise ValueError("dataset lm needs data.train: a .txt, .jsonl, .csv or .parquet file of texts or pairs")
        elif self.dataset == "files":
            if not self.train or not self.format:
                raise ValueError(
                    "dataset files needs data.train (a file) and data.format (csv, tsv, jsonl, parquet or conll)"
                )
        elif self.train is not None:
            raise ValueError(
                f"data.train reads your own files, data.dataset {self.dataset!r} a preset: give one of them"
            )
        return self

    def text_files(self) -> Any:
        """The files of ``dataset: files`` as the reader's :class:`~distill.data.labelled.TextFiles`."""
        from distill.data.labelled import TextFiles

        return TextFiles(
            self.format,  # type: ignore[arg-type]
            self.train,  # type: ignore[arg-type]
            validation=self.validation,
            test=self.test,
            unlabeled=self.unlabeled,
            text=self.text,
            label=self.label,
            tokens=self.tokens,
            tags=self.tags,
            labels=self.labels,
            scheme=self.scheme,
            rename=dict(self.rename),
            label_separator=self.label_separator,
        )


class TeacherSpec(StrictModel):
    model: AnyModelSpec = MLPSpec(hidden=[512, 512])
    checkpoint: Text | None = None  # a trained teacher (.safetensors or checkpoint folder): skips teacher training
    seed: int = 0
    train: TrainSettings = TrainSettings()
    ensemble: EnsembleSpec | None = None  # several teachers, averaged (Hinton et al. 2015)
    cache: TeacherCacheSpec | None = None  # the teacher's outputs on disk (distill cache-teacher)


class StudentSpec(StrictModel):
    model: AnyModelSpec = MLPSpec(hidden=[32])
    train: TrainSettings = TrainSettings()  # used for the hard-label baseline and the distilled student alike
    baseline: bool = True  # also train the student on hard labels alone, from the same initialisation
    # teacher-assistant chain: the assistants between teacher and student, largest first; each step uses
    # distill:. hf students list layer counts ([4]: 6 -> 4 -> student), others list models ([{hidden: [400]}]).
    chain: list[int] | list[AnyModelSpec] = Field(default_factory=list)


class MatchSpec(StrictModel):
    student: LayerName | list[LayerName]  # a dotted module name, or several (paired with the teacher's, in order)
    teacher: LayerName | list[LayerName]
    loss: str = "hidden_mse"
    weight: Weight | list[Weight] = 1.0  # one, or one per layer pair
    connector: str | None = None
    connector_hidden: int | None = Field(None, ge=1)
    name: Text | None = None
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
    temperature: Temperature = 4.0
    kd_weight: Weight = 1.0
    hard_weight: Weight = 0.0
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


class Recipe(StrictModel):
    name: Text = "experiment"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # one distilled (and baseline) student per seed
    data: DataSpec = DataSpec()
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    distill: DistillSpec = DistillSpec()
    strategy: AnyStrategySpec = Offline()
    transfer: TransferSpec = TransferSpec()
    compress: list[AnyCompressStep] = Field(default_factory=list)  # after distillation, in order (distill.compress)
    generation: GenerationSpec = GenerationSpec()  # language models: samples, seq-KD and on-policy completions

    @model_validator(mode="after")
    def _strategy_fits(self) -> Recipe:
        self.strategy.check(self)  # the strategy's own cross-section rules
        if self.compress and self.strategy.kind != "offline":
            raise ValueError(
                f"compress: runs on the distilled student of the offline strategy, not strategy {self.strategy.kind!r}"
            )
        for step in self.compress:
            step.check(self)
        if self.teacher.ensemble and self.distill.matches:
            raise ValueError("teacher.ensemble: feature matches need one teacher's layers; use response losses only")
        return self

    @model_validator(mode="after")
    def _models_fit_data(self) -> Recipe:
        reads = dataset_entry(self.data.dataset).inputs
        ensemble = self.teacher.ensemble.models if self.teacher.ensemble else []
        chain = [step for step in self.student.chain if isinstance(step, ModelSpec)]
        models = {"teacher.model": self.teacher.model, "student.model": self.student.model}
        models.update({f"teacher.ensemble.models[{i}]": spec for i, spec in enumerate(ensemble)})
        models.update({f"student.chain[{i}]": spec for i, spec in enumerate(chain)})
        for where, spec in models.items():
            if spec.inputs not in (reads, "any"):
                fit = sorted(kind for kind in kinds() if spec_class(kind).inputs in (reads, "any"))
                raise ValueError(
                    f"{where}.kind is {spec.kind!r}, which reads {spec.inputs}, but dataset {self.data.dataset!r} "
                    f"gives {reads}: use one of {fit}"
                )
        self._check_chain()
        return self

    def _check_chain(self) -> None:
        chain, student = self.student.chain, self.student.model
        if not chain or not isinstance(chain[0], int):
            return
        if not hasattr(student, "layers"):
            raise ValueError("student.chain: layer counts ([4]) need a transformer student; list model blocks instead")
        depths = [*chain, student.layers]
        if student.layers is None or any(b >= a for a, b in itertools.pairwise(depths)):
            raise ValueError(f"student.chain must shrink step by step down to the student, got {depths}")


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


def _override_value(key_path: str, text: str) -> Any:
    try:
        return load_recipe_yaml(text, f"override {key_path}={text}")
    except YAMLProblem as problem:
        raise RecipeError(
            f"{problem}; write a YAML value (3, 0.1, [0, 1], {{kind: linear, start: 8, end: 2}}) and quote text "
            "that holds YAML signs ([ ] { } : #)"
        ) from None


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
            node[key] = _override_value(key_path, text)
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


def load_recipe(name_or_path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Recipe, dict]:
    """Read, override and validate a recipe; return the model and the raw dict (stored in checkpoints)."""
    path = resolve_recipe_path(name_or_path)
    try:
        raw = load_recipe_yaml(path.read_text(), str(path)) or {}
    except YAMLProblem as problem:
        raise RecipeError(str(problem)) from None
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
        raise RecipeError(format_validation_error(error, source, raw, Recipe)) from None
