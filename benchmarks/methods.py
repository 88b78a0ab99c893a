"""Every method of the zoo side by side, on real data, from the same start and schedule.

    python benchmarks/methods.py [--seeds 0 1 2] [--only kd,at] [--datasets mnist1d,digits] [--quick]

Per dataset it trains one teacher, then for every seed one initial student; every method (and the
vanilla student, trained on labels alone) starts from that student and follows the same optimiser,
schedule, epochs and data order. Each method uses the loss weight and settings of its reference
implementation (``SETTINGS`` below), nothing tuned here; the one change is CRD's number of
negatives, 512 instead of 16384, which 2 CPU cores could not afford. Test accuracy is read at the final epoch.
Prints a markdown table (mean ± std over seeds, gain over vanilla, train time per epoch relative to
vanilla) and writes benchmarks/results/methods.json; ``--only`` reruns some rows (with their own vanilla)
and replaces them in that record.

* MNIST-1D (the ``mnist1d`` package, 4,000 train / 1,000 test signals of length 40): a 1-D CNN
  teacher (32-64-128 channels, two convs per block) and a 1-D CNN student (16-32-64, one conv).
* scikit-learn digits (1,257 / 540): an MLP teacher (256-256) and an MLP student (32-32). Methods
  that need spatial feature maps (AT, SAD, NST, AB, FSP) have no MLP counterpart and are marked n/a.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from distill.report.catalog import Entry, catalog
from distill.run.recipe import DistillSpec, validate_recipe
from distill.strategies.context import RunContext
from distill.tasks.registry import load_task
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

ROOT = Path(__file__).resolve().parents[1]
Layers = tuple[str | list[str], str | list[str]]  # (student, teacher)
CRD_NEGATIVES = 512


# Where a feature method reads: every block's output, one middle block, the last block's map,
# the pre-activations of the blocks, or the penultimate embedding (the classifier's input).
# Resolved to real module names per model pair by `Setup.roles`.
Role = Literal["maps", "middle_map", "last_map", "preact", "embedding"]


@dataclass(frozen=True)
class Settings:
    """How this benchmark trains one method: benchmark choices, not library metadata, so they live here."""

    weight: float = 1.0  # the reference implementation's loss weight
    role: Role | None = None  # None: a response method on the logits
    connector: bool = False  # a trainable connector maps student features to the teacher's shape
    options: dict[str, Any] = field(default_factory=dict)
    hard_weight: float = 1.0  # the cross-entropy weight the reference trains with
    needs_maps: bool = False  # spatial feature maps only (no MLP vectors)


# The methods benchmarked, in table order, keyed by registered loss name; titles, papers and knowledge
# types come from the catalog (`distill.report.catalog`), which a test checks lists exactly these names.
SETTINGS: dict[str, Settings] = {
    "kd": Settings(0.9, hard_weight=0.1),
    "dkd": Settings(1.0),
    "dist": Settings(1.0),
    "fitnet": Settings(100.0, "middle_map", connector=True),
    "at": Settings(1000.0, "maps", needs_maps=True),
    "sad": Settings(0.1, "maps", needs_maps=True),
    "nst": Settings(50.0, "maps", needs_maps=True),
    "ft": Settings(200.0, "last_map"),
    "ab": Settings(1.0, "preact", connector=True, needs_maps=True),
    "vid": Settings(1.0, "maps"),
    "rkd_distance": Settings(25.0, "embedding"),
    "rkd_angle": Settings(50.0, "embedding"),
    "sp": Settings(3000.0, "last_map"),
    "cc": Settings(0.02, "embedding", connector=True, options={"kernel": "bilinear"}),
    "pkt": Settings(30000.0, "embedding"),
    "fsp": Settings(1.0, "maps", connector=True, needs_maps=True),
    "crd": Settings(0.8, "embedding"),
    "srrl": Settings(1.0, "last_map"),  # the official code matches the final map, before pooling
}


@dataclass(frozen=True)
class Method:
    """One benchmarked method: its catalog entry (what it is) joined with its settings (how it is run)."""

    entry: Entry
    settings: Settings

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def knowledge(self) -> str:
        return self.entry.knowledge or ""


def benchmark_methods(only: str = "") -> list[Method]:
    """The methods of ``SETTINGS`` (or the comma-separated ``only`` among them), in its order."""
    entries = {entry.name: entry for entry in catalog()}
    chosen = [name for name in SETTINGS if not only or name in only.split(",")]
    return [Method(entries[name], SETTINGS[name]) for name in chosen]


@dataclass
class Setup:
    """One dataset of the benchmark: its teacher and student as recipe sections, and where methods read."""

    dataset: str
    teacher: dict[str, Any]  # a recipe's model spec
    student: dict[str, Any]
    teacher_train: dict[str, Any]  # a recipe's train settings
    student_train: dict[str, Any]
    roles: dict[str, Layers]
    has_maps: bool

    def recipe(self) -> dict[str, Any]:
        """The recipe every row shares; a row adds its own ``distill:`` block (:func:`distill_block`)."""
        return {
            "name": f"bench-methods-{self.dataset}",
            "data": {"dataset": self.dataset},
            "teacher": {"model": self.teacher, "seed": 0, "train": self.teacher_train},
            "student": {"model": self.student, "train": self.student_train},
        }


def _settings(epochs: int, lr: float, batch: int) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "batch_size": batch,
        "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 1e-4},
        "lr_schedule": {"name": "cosine", "warmup_steps": 20},
        "keep_checkpoints": 1,
        "log_every": 1000,
    }


def setups(quick: bool) -> dict[str, Setup]:
    scale = 0.1 if quick else 1.0
    blocks = ["block1", "block2", "block3"]
    return {
        "mnist1d": Setup(
            "mnist1d",
            {"kind": "cnn1d", "channels": [32, 64, 128], "convs_per_block": 2},
            {"kind": "cnn1d", "channels": [16, 32, 64]},
            _settings(max(1, round(40 * scale)), 3e-3, 128),
            _settings(max(1, round(30 * scale)), 3e-3, 128),
            {
                "maps": (blocks, blocks),
                "middle_map": ("block2", "block2"),
                "last_map": ("block3", "block3"),
                "preact": ([f"{b}.bn" for b in blocks], [f"{b}.bn2" for b in blocks]),
                "embedding": ("flatten", "flatten"),
            },
            has_maps=True,
        ),
        "digits": Setup(
            "digits",
            {"kind": "mlp", "hidden": [256, 256], "dropout": 0.2},
            {"kind": "mlp", "hidden": [32, 32]},
            _settings(max(1, round(40 * scale)), 1e-3, 64),
            _settings(max(1, round(40 * scale)), 3e-3, 64),
            {
                "maps": (["relu1", "relu2"], ["relu1", "relu2"]),
                "middle_map": ("relu1", "relu1"),
                "last_map": ("relu2", "relu2"),
                "embedding": ("relu2", "relu2"),
            },
            has_maps=False,
        ),
    }


def distill_block(method: Method, setup: Setup, total_steps: int) -> dict[str, Any]:
    """The recipe ``distill:`` block of one method with its reference settings (validated by the library)."""
    name, settings = method.name, method.settings
    if settings.role is None:  # a response method on the logits
        kd_weight: Any = settings.weight
        if name == "dkd":  # linear warm-up of the DKD weight over the first 20 of 240 epochs
            kd_weight = {
                "kind": "linear",
                "start": 0.0,
                "end": settings.weight,
                "steps": max(1, total_steps * 20 // 240),
            }
        temperature = 1.0 if name == "dist" else 4.0
        return {
            "response_loss": name,
            "temperature": temperature,
            "kd_weight": kd_weight,
            "hard_weight": settings.hard_weight,
        }
    student_layers, teacher_layers = setup.roles[settings.role]
    weight: Any = settings.weight
    if name == "ab":  # RepDistiller weighs layer i of n by 2^(i-n+1), then by 3 (its init stage)
        weight = [3 * 2.0 ** (i - len(student_layers) + 1) for i in range(len(student_layers))]
    extra: dict[str, Any] = {"teacher_head": "head"} if name == "srrl" else {}
    if name == "crd":  # 16384 negatives (RepDistiller) cost minutes per epoch on 2 CPU cores
        extra = {"nce_k": CRD_NEGATIVES}
    on_maps = setup.has_maps and settings.role != "embedding"
    match: dict[str, Any] = {
        "student": student_layers,
        "teacher": teacher_layers,
        "loss": name,
        "weight": weight,
        "connector": ("conv1x1" if on_maps else "linear") if settings.connector else None,
        "options": {**settings.options, **extra},
    }
    if name in ("ab", "fsp", "ft"):  # RepDistiller: 30 initialisation epochs of 240
        match["pretrain_epochs"] = max(1, round(setup.student_train["epochs"] * 30 / 240))
    return {"response_loss": None, "kd_weight": 0.0, "hard_weight": settings.hard_weight, "matches": [match]}


def run_setup(setup: Setup, methods: list[Method], seeds: list[int], out: Path) -> dict:
    """Teacher once, then per seed one initial student that every method (and vanilla) starts from."""
    raw = setup.recipe()
    recipe = validate_recipe(raw, f"benchmark {setup.dataset}")
    context = RunContext(recipe, raw, out, load_task(recipe), show_progress=False)
    task = context.task
    teacher = context.teacher().model
    total_steps = -(-len(task.train) // recipe.student.train.batch_size) * recipe.student.train.epochs
    rows: dict[str, dict] = {}
    chosen = [None, *[m for m in methods if setup.has_maps or not m.settings.needs_maps]]
    for seed in seeds:
        initial = context.build_student(seed)
        for entry in chosen:
            name = "vanilla" if entry is None else entry.name
            student = copy.deepcopy(initial)
            torch.manual_seed(seed)  # connectors start alike whichever rows ran before (--only)
            if entry is None:
                objective = context.objective(None, student)
            else:
                block = DistillSpec.model_validate(distill_block(entry, setup, total_steps))
                objective = context.with_distill(block).objective(teacher, student)
            run_dir = out / name / f"seed-{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            started = time.perf_counter()
            context.train(objective, run_dir, seed, name)
            seconds = (time.perf_counter() - started) / recipe.student.train.epochs  # a pre-training stage counts
            row = rows.setdefault(name, {"accuracy": [], "seconds_per_epoch": []})
            row["accuracy"].append(task.score(student))
            row["seconds_per_epoch"].append(seconds)
            print(
                f"{setup.dataset:8s} seed {seed} {name:13s} {100 * row['accuracy'][-1]:6.2f}%  {seconds:.2f} s/epoch",
                flush=True,
            )
    return {
        "teacher_accuracy": task.score(teacher),
        "rows": summarise(rows),
        "train_examples": len(task.train),
        "test_examples": task.describe()["evaluation_examples"],
    }


def summarise(rows: dict[str, dict]) -> dict[str, dict]:
    vanilla_accuracy = statistics.mean(rows["vanilla"]["accuracy"])
    vanilla_seconds = statistics.mean(rows["vanilla"]["seconds_per_epoch"])
    summary = {}
    for name, row in rows.items():
        accuracies = row["accuracy"]
        summary[name] = {
            "accuracy": accuracies,
            "mean": statistics.mean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "gain": statistics.mean(accuracies) - vanilla_accuracy,
            "time_vs_vanilla": statistics.mean(row["seconds_per_epoch"]) / vanilla_seconds,
        }
    return summary


def markdown(results: dict[str, dict], methods: list[Method]) -> str:
    datasets = list(results)
    header = "| method | knowledge | " + " | ".join(f"{d} acc (%) | gain | time" for d in datasets) + " |"
    lines = [header, "|---|---|" + "---|---|---|" * len(datasets)]
    teacher = " | ".join(f"{100 * results[d]['teacher_accuracy']:.2f} | | " for d in datasets)
    lines.append(f"| teacher | | {teacher} |")
    for name, knowledge in [("vanilla", "labels only"), *[(m.name, m.knowledge) for m in methods]]:
        cells = []
        for d in datasets:
            row = results[d]["rows"].get(name)
            if row is None:
                cells.append("n/a | | ")
                continue
            gain = "" if name == "vanilla" else f"{100 * row['gain']:+.2f}"
            cells.append(f"{100 * row['mean']:.2f} ± {100 * row['std']:.2f} | {gain} | {row['time_vs_vanilla']:.2f}x")
        lines.append(f"| {name} | {knowledge} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def merge_rows(record: dict, fresh: dict[str, dict], methods: list[Method], args: argparse.Namespace) -> dict:
    """The stored full table with the rows of ``methods`` replaced by a fresh run's (same seeds only).

    Each replaced row keeps the gain and time ratio against the vanilla of its own run, so a ratio is
    still measured side by side; the command of the rerun is recorded under ``reruns``.
    """
    if record["seeds"] != args.seeds:
        raise SystemExit(f"--only reruns must use the record's seeds {record['seeds']}, got {args.seeds}")
    for dataset, result in fresh.items():
        rows = record["results"][dataset]["rows"]
        for method in methods:
            if method.name in result["rows"]:
                rows[method.name] = result["rows"][method.name]
    order = [name for name in setups(quick=False) if name in record["results"]]  # the JSON file sorts keys
    record["table"] = markdown({name: record["results"][name] for name in order}, benchmark_methods())
    command = f"python benchmarks/methods.py --only {args.only} --datasets {args.datasets}"
    record.setdefault("reruns", []).append({"command": command, "versions": library_versions()})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", default="", help="comma-separated method names (default: all)")
    parser.add_argument("--datasets", default="mnist1d,digits")
    parser.add_argument("--quick", action="store_true", help="a tenth of the epochs, to check the script runs")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench-methods"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    methods = benchmark_methods(args.only)
    started = time.perf_counter()
    results = {}
    for name in args.datasets.split(","):
        results[name] = run_setup(setups(args.quick)[name], methods, args.seeds, Path(args.out) / name)
    minutes = (time.perf_counter() - started) / 60
    table = markdown(results, methods)
    print(f"\nTest accuracy at the final epoch, mean ± std over seeds {args.seeds}; {minutes:.1f} min in all\n")
    print(table)
    if args.quick:
        return  # a tenth of the epochs: for checking, not for the record
    target = ROOT / "benchmarks" / "results" / "methods.json"
    if args.only:  # a rerun of some rows replaces them in the record, beside their fresh vanilla
        payload = merge_rows(json.loads(target.read_text()), results, methods, args)
    else:
        payload = {
            "benchmark": "methods",
            "seeds": args.seeds,
            "results": results,
            "table": table,
            "wall_minutes": minutes,
            "versions": library_versions(),
            "command": "python benchmarks/methods.py",
        }
    atomic_write_json(target, payload)
    print(f"\nwrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
