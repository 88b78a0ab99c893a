"""Shrinking SmolLM2-135M-Instruct on the King James Bible: next-token CE against every distillation row.

    python -m benchmarks.lm [--layers 6] [--train-blocks 1500] [--epochs 1] [--lr 5e-4] [--methods ...]

Teacher: the packaged SmolLM2-135M-Instruct (30 layers, GGUF dequantised to float32). Student: the teacher
with ``--layers`` of its layers kept (uniform: 30 → 6 keeps 0, 6, 12, 18, 24, 29), initialised from them.
Data: KJV by chapter (../shared/data/kjv), blocks of 128 tokens; ``--train-blocks`` seeded training blocks,
100 dev blocks evaluated per epoch and 100 test blocks reported. Every row trains through the library
(``run_recipe``) from the same initial student, the same data order and token budget (``--train-blocks`` x
128 tokens per epoch), AdamW with cosine decay and batch 8. Rows (``--methods``, in this order):

* ``ce+forward_kl_top32``: the CE baseline (next-token cross-entropy alone) and forward KL(p_T ‖ p_S) read
  from the top-32 cache (renormalised tail), which this first run fills (or reuses, when it is there);
* ``forward_kl+ce``: the same cached forward KL plus next-token CE with weight 0.5;
* ``jsd`` (β = 0.5, renormalised tail) and ``reverse_kl`` (the student-shaped tail: the mass outside the
  top 32 is one bucket shaped like the student's own), both from the cache;
* ``forward_kl``: forward KL against the live, dense teacher (all 49,152 logits);
* ``on_policy``: GKD with λ = 0.5: half the batches are the student's own sampled completions (32-token
  prompt, 96 new tokens at temperature 1) scored by the live teacher, the rest read from the cache (student-
  shaped tail); JSD(0.5);
* ``seq_kd``: Kim & Rush: the teacher's greedy completions (32-token prompt, 96 new tokens) of every training
  block, made once; the student trains on them with CE;
* ``jsd_student_tail``: ``jsd`` with the student-shaped tail, beside the renormalised one.

Plus ``teacher`` and ``init`` (the student before training). Reports dev and test perplexity, held-out KL to
the teacher, training and generation tokens/s, at the final epoch (no selection on test). Results are
written to benchmarks/results/lm.json after every run, and a rerun skips the rows already there with the
same settings (resumable; run it with nohup). A row killed part way resumes from its newest step
checkpoint (every 40 steps).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.nlp_common import RESULTS, ROOT
from distill.run.recipe import validate_recipe
from distill.run.runner import run_recipe
from distill.train.atomic import atomic_write_json, read_json
from distill.train.checkpoint import library_versions
from distill.train.guard import NonFiniteLossError

TARGET = RESULTS / "lm.json"
CACHED = {"top_k": 32, "tail": "renormalize"}
GENERATE = {"prompt_tokens": 32, "max_new_tokens": 96}
# method -> its run: the distill: block, whether the teacher is read from the cache, the strategy
METHODS: dict[str, dict[str, Any]] = {
    "ce+forward_kl_top32": {"distill": {"response_loss": "forward_kl"}, "cache": True},
    "forward_kl+ce": {"distill": {"response_loss": "forward_kl", "hard_weight": 0.5}, "cache": True},
    "jsd": {"distill": {"response_loss": "jsd", "response_options": {"beta": 0.5}}, "cache": True},
    # mode-seeking losses read the cache with the student-shaped tail (a renormalised top-32 would teach them to
    # give the other tokens no mass at all: the jsd row's perplexity); forward KL keeps the renormalised one
    "reverse_kl": {"distill": {"response_loss": "reverse_kl"}, "cache": True, "tail": "student"},
    "forward_kl": {"distill": {"response_loss": "forward_kl"}, "cache": False},
    "on_policy": {
        "distill": {"response_loss": "jsd", "response_options": {"beta": 0.5}},
        "cache": True,
        "tail": "student",
        "strategy": {"kind": "on_policy", "student_data_fraction": 0.5},
        "generation": {**GENERATE, "temperature": 1.0},
    },
    "seq_kd": {
        "distill": {"response_loss": None, "hard_weight": 1.0},
        "cache": False,
        "strategy": {"kind": "seq_kd"},
        "generation": {**GENERATE, "temperature": 0.0},
    },
    "jsd_student_tail": {
        "distill": {"response_loss": "jsd", "response_options": {"beta": 0.5}},
        "cache": True,
        "tail": "student",
    },
}


def recipe(method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    spec = METHODS[method]
    teacher: dict[str, Any] = {"model": {"kind": "causal_lm", "path": "smollm2"}}
    if spec["cache"]:
        teacher["cache"] = {**CACHED, "tail": spec.get("tail", CACHED["tail"]), "dir": str(work / "teacher-cache")}
    raw: dict[str, Any] = {
        "name": f"lm-{method}",
        "data": {
            "dataset": "kjv",
            "max_length": 128,
            "train_subset": args.train_blocks,
            "eval_subset": args.eval_blocks,
        },
        "teacher": teacher,
        "student": {
            "model": {"kind": "causal_lm", "layers": args.layers},
            "baseline": method.startswith("ce+"),
            "train": {
                "epochs": args.epochs,
                "batch_size": 8,
                "eval_batch_size": 8,
                "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 0.0},
                "lr_schedule": {"name": "cosine", "warmup_steps": 10, "final_factor": 0.1},
                "log_every": 10,
                "checkpoint_every_steps": 40,  # a killed row resumes from its newest step checkpoint
                "keep_checkpoints": 1,
            },
        },
        "distill": {"temperature": 1.0, "kd_weight": 1.0, "hard_weight": 0.0, **spec["distill"]},
        "generation": {"samples": 3, "max_new_tokens": 24, "prompt_tokens": 12, **spec.get("generation", {})},
    }
    if "strategy" in spec:
        raw["strategy"] = spec["strategy"]
    return raw


def row_summary(row: dict[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return {
        "next_token_accuracy": row["score"]["mean"],
        "dev_perplexity": details.get("validation_perplexity"),
        "test_perplexity": details["test_perplexity"],
        "teacher_kl": details.get("teacher_kl"),
        "train_tokens_per_second": details.get("train_tokens_per_second"),
        "generation_tokens_per_second": details.get("generation_tokens_per_second"),
        "parameters": row["parameters"],
        "size_bytes": row["size_bytes"],
        "generations": details.get("generations"),
    }


def initial_student(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The student before any training: the teacher's kept layers, scored on dev and test."""
    from distill.lm.models import decoder_layers, drop_layers, load_causal_lm, uniform_layers
    from distill.tasks.lm import load_lm_task

    raw = recipe("forward_kl", args, work)
    task = load_lm_task(validate_recipe(raw, "benchmark lm init"))
    teacher = load_causal_lm("smollm2")
    student = drop_layers(teacher, uniform_layers(len(decoder_layers(teacher)), args.layers))
    test = task.split_metrics(student, "test")
    return {
        "next_token_accuracy": test["accuracy"],
        "dev_perplexity": task.split_metrics(student, "validation")["perplexity"],
        "test_perplexity": test["perplexity"],
        "teacher_kl": task.teacher_kl(student, teacher),
        "parameters": sum(parameter.numel() for parameter in student.parameters()),
    }


def _number(value: float | None, form: str) -> str:
    if value is None:
        return ""
    return format(value, ".3g" if abs(value) >= 1e5 else form)  # an untrained student's perplexity is huge


def markdown(record: dict[str, Any]) -> str:
    teacher = record["teacher"]
    lines = [
        "| row | dev ppl | test ppl | vs CE (test) | KL to teacher | next-token acc. | train tokens/s |",
        "|---|---|---|---|---|---|---|",
        f"| teacher (30 layers) | {_number(teacher.get('dev_perplexity'), '.2f')} | "
        f"{teacher['test_perplexity']:.2f} | | | {100 * teacher['next_token_accuracy']:.2f}% | |",
    ]
    ce = record["rows"].get("ce", {}).get("test_perplexity")
    order = ["init", "ce", *(method.removeprefix("ce+") for method in METHODS)]  # the JSON's keys are sorted
    for name, row in sorted(record["rows"].items(), key=lambda item: order.index(item[0])):
        relative = f"{100 * (row['test_perplexity'] / ce - 1):+.1f}%" if ce and name not in ("ce", "init") else ""
        lines.append(
            f"| {name} | {_number(row.get('dev_perplexity'), '.2f')} | {_number(row['test_perplexity'], '.2f')} | "
            f"{relative} | "
            f"{_number(row.get('teacher_kl'), '.3f')} | {100 * row['next_token_accuracy']:.2f}% | "
            f"{_number(row.get('train_tokens_per_second'), '.0f')} |"
        )
    lines += [f"| {name} | diverged: non-finite loss | | | | | |" for name in record.get("failures", {})]
    return "\n".join(lines)


def run_method(method: str, args: argparse.Namespace, work: Path, record: dict[str, Any]) -> None:
    raw = recipe(method, args, work)
    out = work / method
    # a row killed part way (its recipe is there) continues from its newest checkpoint; others start afresh
    resume = (out / "recipe.yaml").is_file() and any(out.glob("seed-0/*/checkpoints/*/state.json"))
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    results = run_recipe(validate_recipe(raw, f"benchmark lm {method}"), raw, out, resume=resume, show_progress=False)
    rows = {row["role"]: row for row in results["rows"]}
    if "baseline" in rows:
        record["rows"]["ce"] = row_summary(rows["baseline"])
    record["rows"][method.removeprefix("ce+")] = row_summary(rows["distilled"])
    teacher = results["teacher"]
    record["teacher"] = {
        "next_token_accuracy": teacher["score"],
        "dev_perplexity": teacher["details"].get("validation_perplexity"),
        "test_perplexity": teacher["details"]["test_perplexity"],
        "parameters": teacher["parameters"],
        "generations": teacher["details"].get("generations"),
    }
    record["runs"][method] = {"minutes": (time.perf_counter() - started) / 60, "resumed": resume}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--train-blocks", type=int, default=1500)
    parser.add_argument("--eval-blocks", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-lm"))
    parser.add_argument("--quick", action="store_true", help="a few blocks, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.train_blocks, args.eval_blocks, args.layers = 16, 4, 2
    torch.set_num_threads(2)
    work = Path(args.work)
    settings = {key: getattr(args, key) for key in ("layers", "train_blocks", "eval_blocks", "epochs", "lr")}
    record = read_json(TARGET) if TARGET.is_file() and not args.quick else None
    if record is None or record.get("settings") != settings:
        record = {"benchmark": "lm", "settings": settings, "rows": {}, "runs": {}}
    if "init" not in record["rows"]:
        record["rows"] = {"init": initial_student(args, work), **record["rows"]}
    for method in args.methods.split(","):
        if method in record["runs"]:
            print(f"{method}: already in {TARGET.name}, skipped", flush=True)
            continue
        try:
            run_method(method, args, work, record)
        except NonFiniteLossError as error:  # a diverging row is a result too; the rows after it still run
            record.setdefault("failures", {})[method] = str(error)
            print(f"{method}: failed: {error}", flush=True)
        else:
            record.get("failures", {}).pop(method, None)
        record["table"] = markdown(record)
        record["versions"] = library_versions()
        record["command"] = "python -m benchmarks.lm"
        if not args.quick:
            atomic_write_json(TARGET, record)
        if method in record["runs"]:
            print(f"{method}: {record['runs'][method]['minutes']:.1f} min\n{record['table']}", flush=True)


if __name__ == "__main__":
    main()
