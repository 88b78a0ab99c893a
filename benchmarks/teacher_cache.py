"""What the on-disk teacher cache (``teacher.cache``) saves on SST-2: a training epoch that reads the teacher's
outputs from disk against one that runs the teacher, side by side, and the disk bytes per example.

    python -m benchmarks.teacher_cache [--train-subset 4000] [--repeats 3]

Teacher: the packaged MiniLM-L6 (6 layers, 384 wide) with a sequence-classification head; the head is not
fine-tuned here, because a teacher's accuracy changes neither its forward's cost nor its outputs' size.
Student: 3 layers initialised from teacher layers 0, 2, 5. Data: a seeded subset of SST-2's training
sentences (length-grouped batches of 32, at most 64 tokens). Two objectives:

* ``kd``: Hinton KD on the logits (the cache holds 2 logits per example);
* ``tinybert``: KD + hidden-state MSE on every layer (embeddings included) + attention KL (the cache holds
  the logits, 4 hidden states and 3 attention maps per example, trimmed to its length, float32).

For each, the cache is filled once (timed: one teacher pass over the data, through ``fill_output_cache``),
then one epoch is trained with the live teacher and one from the cache, alternately, ``--repeats`` times,
each from the same initial student; the epoch time is the library's own (``metrics.jsonl``). Reports the
median epoch times, their ratio, the fill time and the bytes per example on disk. Writes
benchmarks/results/teacher_cache.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.nlp_common import RESULTS, ROOT, bench_context
from distill.run.recipe import DistillSpec
from distill.train.atomic import atomic_write_json, read_json
from distill.train.checkpoint import library_versions
from distill.train.metrics_log import training_throughput

TARGET = RESULTS / "teacher_cache.json"
WORK = ROOT / "runs" / "bench-teacher-cache"
TRAIN = {"epochs": 1, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 1e-4}}
KD = {"response_loss": "kd", "temperature": 2.0, "hard_weight": 1.0}
OBJECTIVES: dict[str, dict[str, Any]] = {
    "kd": KD,
    "tinybert": {
        **KD,
        "matches": [
            {"student": "hidden", "teacher": "hidden", "layer_map": "uniform", "embeddings": True}
            | {"loss": "hidden_mse", "name": "hidden"},
            {"student": "attention", "teacher": "attention", "layer_map": "uniform"}
            | {"loss": "attention_kl", "name": "attention"},
        ],
    },
}


def recipe(subset: int, cached: bool) -> dict[str, Any]:
    raw = {
        "name": "bench-teacher-cache",
        "data": {"dataset": "sst2", "train_subset": subset, "split_seed": 0, "max_length": 64},
        "teacher": {"model": {"kind": "hf", "path": "minilm"}, "train": TRAIN},
        "student": {"model": {"kind": "hf", "layers": 3, "layer_map": "uniform"}, "train": TRAIN, "baseline": False},
    }
    if cached:
        raw["teacher"]["cache"] = {"dir": str(WORK / "cache"), "batch_size": 32}
    return raw


def epoch_seconds(run_dir: Path, examples: int) -> float:
    return examples / training_throughput(run_dir)["train_examples_per_second"]


def one_objective(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill the cache of ``name``'s captures, then alternate live and cached epochs."""
    block = DistillSpec.model_validate(OBJECTIVES[name])
    live = bench_context(recipe(args.train_subset, cached=False), WORK / "live").with_distill(block)
    cached = bench_context(recipe(args.train_subset, cached=True), WORK / "cached").with_distill(block)
    teacher = live.build_teacher(live.recipe.teacher.model, 0).eval()
    started = time.perf_counter()
    filled = cached.objective(teacher, cached.build_student(0, source=teacher)).teacher_cache
    fill_seconds = time.perf_counter() - started  # 0 when an earlier run filled it: see "filled_now"
    seconds: dict[str, list[float]] = {"live": [], "cached": []}
    for repeat in range(args.repeats):
        for mode, context in (("live", live), ("cached", cached)):
            objective = context.objective(teacher, context.build_student(0, source=teacher))
            if mode == "live":
                objective.teacher_cache = None  # the teacher runs on every batch (no in-memory reuse either)
            run_dir = WORK / f"{name}-{mode}"
            shutil.rmtree(run_dir, ignore_errors=True)
            context.train(objective, run_dir, 0, f"{name} {mode}", evaluate=False)
            seconds[mode].append(epoch_seconds(run_dir, args.train_subset))
            print(f"{name} {mode} repeat {repeat}: {seconds[mode][-1]:.1f} s", flush=True)
    live_s, cached_s = statistics.median(seconds["live"]), statistics.median(seconds["cached"])
    return {
        "captured": ["logits", *filled.manifest["names"]],
        "epoch_seconds_live": live_s,
        "epoch_seconds_cached": cached_s,
        "cached_over_live": cached_s / live_s,
        "repeats": seconds,
        "fill_seconds": fill_seconds,
        "bytes_per_example": filled.bytes_on_disk() / len(filled),
        "bytes_on_disk": filled.bytes_on_disk(),
    }


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "| objective | cached | epoch, live teacher | epoch, from the cache | cached / live | fill (once) "
        "| bytes per example |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in record["rows"].items():
        captured = f"logits + {len(row['captured']) - 1} layers" if len(row["captured"]) > 1 else "logits"
        lines.append(
            f"| {name} | {captured} | {row['epoch_seconds_live']:.1f} s | {row['epoch_seconds_cached']:.1f} s | "
            f"{row['cached_over_live']:.2f}x | {row['fill_seconds']:.1f} s | {row['bytes_per_example']:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args()
    shutil.rmtree(WORK / "cache", ignore_errors=True)  # the fill is timed from nothing
    record: dict[str, Any] = {
        "benchmark": "teacher_cache",
        "command": "python -m benchmarks.teacher_cache",
        "settings": {"train_subset": args.train_subset, "repeats": args.repeats, "train": TRAIN},
        "versions": library_versions(),
        "rows": read_json(TARGET)["rows"] if TARGET.exists() else {},  # rows not rerun are kept
    }
    for name in args.objectives.split(","):
        record["rows"][name] = one_objective(name, args)
        record["table"] = markdown(record)
        atomic_write_json(TARGET, record)
    print(record["table"])


if __name__ == "__main__":
    main()
