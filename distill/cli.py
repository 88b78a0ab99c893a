"""The ``distill`` command line: demo, run, export, predict, train-teacher, cache-teacher, eval, inspect."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console

from distill.losses.registry import UnknownLossError
from distill.models import build_model, count_parameters
from distill.report import print_table
from distill.report.layers import layer_table
from distill.run.recipe import Recipe, RecipeError, load_recipe
from distill.run.runner import load_data, make_context, run_recipe
from distill.train import NonFiniteLossError
from distill.train.atomic import read_json
from distill.train.checkpoint import load_module_weights
from distill.train.lock import LOCK_FILE, RunLock, RunLockedError
from distill.train.resume import latest_checkpoint
from distill.train.signals import TrainingInterrupted
from distill.train.storage import storage_error_message, write_problem
from distill.train.world import is_main_process

app = typer.Typer(
    help="Knowledge distillation: train a small student to reproduce a big teacher.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
USER_ERRORS = (
    RecipeError,
    UnknownLossError,
    FileNotFoundError,
    NonFiniteLossError,
    RunLockedError,
    ValueError,
    KeyError,
)

RecipeArgument = Annotated[str, typer.Argument(help="recipe YAML file, or a built-in recipe name (digits-demo)")]
OverridesArgument = Annotated[
    list[str] | None, typer.Argument(help="key.path=value overrides, e.g. student.train.epochs=3 seeds=[0]")
]
DataDirOption = Annotated[str | None, typer.Option(help="folder holding the dataset files (overrides data.data_dir)")]
ResumeOption = Annotated[bool, typer.Option(help="continue the run in --out from its newest checkpoints that verify")]
ResumeFromOption = Annotated[
    str | None,
    typer.Option(help="resume the unfinished stage from this checkpoint (e.g. epoch-0002) instead of its newest"),
]


def friendly_errors(command):
    """Show user errors as one red message (exit code 2); DISTILL_DEBUG=1 shows the traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as stopped:  # a checkpoint was written: say so, exit as the signal asks
            console.print(f"[bold yellow]stopped:[/] {stopped}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(128 + stopped.signal_number) from None
        except USER_ERRORS as error:
            if os.environ.get("DISTILL_DEBUG"):
                raise
            message = storage_error_message(error) if isinstance(error, OSError) else None
            console.print(f"[bold red]error:[/] {message or error}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as error:  # disk full, read-only: a sentence; any other OS error stays a traceback
            message = storage_error_message(error)
            if message is None or os.environ.get("DISTILL_DEBUG"):
                raise
            console.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _fresh_folder(base: Path) -> Path:
    """``base`` if it is free, else ``base-2``, ``base-3``...: a demo never overwrites an earlier run."""
    candidate, number = base, 2
    while candidate.exists() and any(candidate.iterdir()):
        candidate, number = base.with_name(f"{base.name}-{number}"), number + 1
    return candidate


def _load_for_run(
    recipe: str, overrides: list[str] | None, out: Path | None, resume: bool
) -> tuple[Recipe, dict, Path]:
    """The validated recipe, its raw mapping, and the run folder (default runs/<name>), checked for reuse."""
    spec, raw = load_recipe(recipe, overrides or [])
    out = out or Path("runs") / spec.name
    if is_main_process():  # under torchrun the others start as it does, and see its first files appear
        _check_out_dir(out, resume)
    return spec, raw, out


def _check_out_dir(out: Path, resume: bool) -> None:
    # a folder with only the recipe in it saw no training (the data was refused, say): it can start again
    # (nor does a teacher cache that distill cache-teacher filled ahead of the run)
    idle = ("recipe.yaml", LOCK_FILE, "teacher-cache")
    started = out.exists() and any(entry.name not in idle for entry in out.iterdir())
    if started and not resume:
        raise ValueError(f"{out} already holds a run; pass --resume to continue it, or --out to choose another folder")
    if resume and not out.exists():
        raise FileNotFoundError(f"--resume: {out} does not exist; run without --resume to start it")
    problem = write_problem(out)
    if problem is not None and not (resume and _finished(out)):
        advice = "copy the run folder somewhere writable and --resume there" if resume else "choose another --out"
        raise ValueError(f"the run folder {out} cannot be written ({problem}); {advice}")


def _finished(out: Path) -> bool:
    return (out / "results.json").is_file()


def _show_finished_read_only(out: Path) -> bool:
    """--resume of a finished run in a folder that cannot be written: show its results as they are."""
    if write_problem(out) is None or not _finished(out):
        return False
    print_table(read_json(out / "results.json"), console)
    console.print(f"run folder: {out} (finished; read-only, so shown as recorded and not re-measured)")
    return True


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path | None, typer.Option(help="run folder (default: a fresh runs/digits-demo*)")] = None,
    quiet: bool = False,
) -> None:
    """Distil on scikit-learn digits: teacher, hard-label student and distilled student, 3 seeds (about a minute)."""
    recipe, raw = load_recipe("digits-demo")
    out = out or _fresh_folder(Path("runs") / recipe.name)
    _check_out_dir(out, resume=False)
    results = run_recipe(recipe, raw, out, show_progress=not quiet)
    print_table(results, console)
    console.print(f"run folder: {out} (results.json, report.md, curves.png, metrics.jsonl, checkpoints)")


@app.command()
@friendly_errors
def run(
    recipe: RecipeArgument,
    overrides: OverridesArgument = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: runs/<recipe name>)")] = None,
    resume: ResumeOption = False,
    resume_from: ResumeFromOption = None,
    data_dir: DataDirOption = None,
    quiet: bool = False,
) -> None:
    """Run a recipe: teacher, hard-label baseline and distilled student for every seed, then the report."""
    spec, raw, out = _load_for_run(recipe, overrides, out, resume or resume_from is not None)
    if (resume or resume_from) and _show_finished_read_only(out):
        return
    main = is_main_process()  # under torchrun only the main process shows progress and the table
    progress = main and not quiet
    results = run_recipe(spec, raw, out, resume=resume_from or resume, data_dir=data_dir, show_progress=progress)
    if main:
        print_table(results, console)
        console.print(f"run folder: {out}")


@app.command()
@friendly_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder (holding results.json)")],
    out: Annotated[Path, typer.Option(help="the folder to write")],
    row: Annotated[str, typer.Option(help="a row's role (distilled, baseline, ...) or its table label")] = "distilled",
    seed: Annotated[int | None, typer.Option(help="which seed's model (default: the first)")] = None,
    format: Annotated[
        str | None, typer.Option(help="hf | onnx | safetensors (default: hf for text, safetensors for tensor runs)")
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Write a row's model: a Hugging Face folder (config with the real layer count and id2label, safetensors
    weights, tokenizer; loads with AutoModelFor...Classification and transformers.pipeline), a tensor model's
    model.safetensors + distill_model.json (distill.run.export_tensor.load_exported), or model.onnx checked
    against the PyTorch model on the run's held-out data. A compressed row: its export step's folder."""
    from distill.run.export import export_row

    done = export_row(run_dir, out, row, seed, format, data_dir)
    model = done.model
    if model is None:
        console.print(f"wrote {out} (the {done.format} artefact of row {row!r})")
        return
    what = type(model).__name__
    if hasattr(model, "config"):
        layers = getattr(model.config, "num_hidden_layers", "?")
        what += f", {layers} layers, labels {list(model.config.id2label.values())}"
    elif done.format == "safetensors":
        what += ": model.safetensors + distill_model.json"
    if done.parity:
        what += (
            f"; ONNX parity on {done.parity['compared']} held-out inputs: max |logit difference| "
            f"{done.parity['max_abs_diff']:.2g}, argmax agreement {done.parity['agreement']:.4f}"
        )
    console.print(f"wrote {out} as {done.format} ({what})")


@app.command()
@friendly_errors
def predict(
    folder: Annotated[
        Path, typer.Argument(help="a folder written by distill export, a run folder, or a transformer checkpoint")
    ],
    text: Annotated[list[str] | None, typer.Option(help="a text to classify (repeatable)")] = None,
    input: Annotated[
        Path | None, typer.Option(help="a file of texts: one per line, or JSONL with a text field")
    ] = None,
) -> None:
    """Predict with an exported model (or a run's distilled student, or a checkpoint of a transformer row):
    one JSON line per text, with label names and probabilities."""
    import json

    from distill.data.files import read_inputs
    from distill.run.exported import servable_folder
    from distill.run.predict import predict as predictions

    texts = list(text or []) + (read_inputs(input) if input is not None else [])
    if not texts:
        raise ValueError('nothing to predict: give --text "..." or --input FILE')
    with servable_folder(folder) as servable:
        for record in predictions(servable, texts):
            print(json.dumps(record, ensure_ascii=False))


@app.command("train-teacher")
@friendly_errors
def train_teacher(
    recipe: RecipeArgument,
    overrides: OverridesArgument = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: runs/<recipe name>)")] = None,
    resume: ResumeOption = False,
    resume_from: ResumeFromOption = None,
    data_dir: DataDirOption = None,
    quiet: bool = False,
) -> None:
    """Train only the recipe's teacher (reuse it later with teacher.checkpoint=<out>/teacher/checkpoints/...)."""
    spec, raw, out = _load_for_run(recipe, overrides, out, resume or resume_from is not None)
    with RunLock(out):
        context = make_context(spec, raw, out, resume_from or resume, data_dir, show_progress=not quiet)
        teacher = context.teacher()
    label = context.task.describe()["metric_label"]
    weights = ", ".join(str(path) for path in teacher.weights)
    console.print(
        f"teacher {label} {100 * context.task.score(teacher.model):.2f}% "
        f"({count_parameters(teacher.model):,} parameters); weights: {weights}"
    )


@app.command("cache-teacher")
@friendly_errors
def cache_teacher(
    recipe: RecipeArgument,
    overrides: OverridesArgument = None,
    out: Annotated[Path | None, typer.Option(help="run folder (default: runs/<recipe name>)")] = None,
    data_dir: DataDirOption = None,
    quiet: bool = False,
) -> None:
    """Write the teacher's outputs for the recipe's training data to disk (teacher.cache), resumable: a causal
    LM's top-k next-token distribution, or a classifier's logits and matched layers per example."""
    spec, raw = load_recipe(recipe, overrides or [])
    if spec.teacher.cache is None:
        raise ValueError(
            "the recipe has no teacher.cache: add e.g. teacher.cache: {} (or the override "
            "teacher.cache.dir=teacher-cache), which the run then reads too"
        )
    out = out or Path("runs") / spec.name
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out):
        context = make_context(spec, raw, out, True, data_dir, show_progress=not quiet)
        teacher = context.teacher().model

        def progress(done: int, total: int) -> None:
            if not quiet:
                console.print(f"cached {done:,} of {total:,}")

        if context.task.cache_teacher:
            _cache_outputs(context, teacher, progress)
        else:
            _cache_top_k(context, teacher, out, progress)


def _cache_top_k(context, teacher, out: Path, progress) -> None:
    from distill.lm.cache import cache_for_task

    cache = cache_for_task(context.recipe.teacher.cache, out, teacher, context.task, progress)
    tokens = len(cache) * cache.block_size
    console.print(
        f"top-{cache.k} cache of {len(cache):,} blocks in {cache.folder}: {cache.bytes_on_disk():,} bytes, "
        f"{cache.bytes_on_disk() / tokens:.1f} bytes per token"
    )


def _cache_outputs(context, teacher, progress) -> None:
    student = context.build_student(0, source=teacher)
    names = context.objective(teacher, student, attach=False).teacher_layers  # what the run's matches read
    cache = context.output_cache(teacher, context.task, names, progress)
    console.print(
        f"teacher output cache of {len(cache):,} examples (logits{''.join(', ' + n for n in names)}) in "
        f"{cache.folder}: {cache.bytes_on_disk():,} bytes, {cache.bytes_on_disk() / len(cache):,.0f} bytes per example"
    )


def _weights_and_recipe(checkpoint: Path, recipe: str | None) -> tuple[Path, str]:
    """Accept a checkpoint folder, a stage folder (its latest checkpoint) or a .safetensors file."""
    if checkpoint.is_dir() and (checkpoint / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(checkpoint / "checkpoints") or checkpoint
    if checkpoint.is_dir():
        state = checkpoint / "state.json"
        weights = checkpoint / "model.safetensors"
        if recipe is None and state.is_file():
            return weights, str(state)
        return weights, recipe
    if recipe is None:
        raise ValueError(f"{checkpoint} is a bare weights file; pass --recipe to say which model it holds")
    return checkpoint, recipe


@app.command("eval")
@friendly_errors
def evaluate_checkpoint(
    checkpoint: Annotated[
        Path, typer.Argument(help="checkpoint folder, stage folder, .safetensors file or exported folder")
    ],
    recipe: Annotated[str | None, typer.Option(help="recipe (default: the one stored in the checkpoint)")] = None,
    role: Annotated[str | None, typer.Option(help="teacher | student (default: guessed from the path)")] = None,
    split: Annotated[str | None, typer.Option(help="an evaluation split (default: the scored one)")] = None,
    data_dir: DataDirOption = None,
) -> None:
    """The task's metric for a saved teacher or student, or an exported folder, on an evaluation split."""
    import json

    from distill.run.exported import load_exported_model

    exported = load_exported_model(checkpoint) if checkpoint.is_dir() else None
    if exported is not None:
        if recipe is None:
            raise ValueError(f"{checkpoint} is an exported model and holds no data: pass --recipe to say what to score")
        spec, _ = load_recipe(recipe)
        _print_scores(f"exported {checkpoint}", exported, load_data(spec, data_dir), split)
        return
    weights, recipe_source = _weights_and_recipe(checkpoint, recipe)
    if recipe_source.endswith("state.json"):
        from distill.run.recipe import validate_recipe

        spec = validate_recipe(json.loads(Path(recipe_source).read_text())["recipe"], recipe_source)
    else:
        spec, _ = load_recipe(recipe_source)
    role = role or ("teacher" if "teacher" in checkpoint.parts else "student")
    task = load_data(spec, data_dir)
    model = _model_for(spec, role, task)
    load_module_weights(model, weights)
    _print_scores(f"{role} {weights}", model, task, split)


def _print_scores(what: str, model: torch.nn.Module, task, split: str | None) -> None:
    scores = task.scores(model)
    split = split or next(iter(scores))  # the scored split comes first
    if split not in scores:
        raise ValueError(f"--split {split!r}: this task evaluates on {', '.join(scores)}")
    described = task.describe()
    label = described["metric_label"] if split == next(iter(scores)) else f"{described['metric']} ({split})"
    console.print(f"{what}: {label} {100 * scores[split]:.2f}%")


def _model_for(spec, role: str, task) -> torch.nn.Module:
    """An untrained model of the recipe's teacher or student (a student shrunk from an untrained teacher)."""
    if role not in ("teacher", "student"):
        raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")

    teacher = build_model(spec.teacher.model, task.model_context(spec.teacher.seed))
    if role == "teacher":
        return teacher
    return build_model(spec.student.model, task.model_context(0, source=teacher))


@app.command()
@friendly_errors
def inspect(
    recipe: RecipeArgument,
    role: Annotated[str, typer.Option(help="teacher | student")] = "student",
    data_dir: DataDirOption = None,
) -> None:
    """List a model's named modules with their output shapes on a real sample (names for feature matches)."""
    spec, _ = load_recipe(recipe)
    task = load_data(spec, data_dir)
    model = _model_for(spec, role, task).eval()
    title = f"{role} of {spec.name}: {count_parameters(model):,} parameters (batch of 2)"
    console.print(layer_table(model, task.sample_inputs(2), title))


if __name__ == "__main__":
    app()
