"""Shrinking SmolLM2-135M-Instruct on the King James Bible: next-token CE against token-level distillation.

    python -m benchmarks.lm [--layers 10] [--train-blocks 1500] [--epochs 1] [--methods ce+forward_kl,jsd]

Teacher: the packaged SmolLM2-135M-Instruct (30 layers, GGUF dequantised to float32). Student: the teacher
with ``--layers`` of its layers kept (uniform: first and last kept), initialised from them. Data: KJV by
chapter (../shared/data/kjv), blocks of 128 tokens; ``--train-blocks`` seeded training blocks, 100 dev
blocks evaluated per epoch and 100 test blocks reported. Every row trains through the library (``run_recipe``)
from the same initial student, the same data order, AdamW lr 2e-4 with cosine decay and batch 8; the teacher
is read from one top-k cache (k = 32, renormalised tail) that the first row fills. Rows:

* ``ce``: next-token cross-entropy alone (the hard-label baseline), trained in the first run beside
* ``forward_kl``: KL(p_T ‖ p_S), then ``reverse_kl``, ``jsd`` (β = 0.5), ``skew_kl`` (α = 0.1), and
  ``forward_kl+ce`` (forward KL plus CE with weight 0.5).

Reports test perplexity, held-out KL to the teacher, training and generation tokens/s, at the final
epoch (no selection on test). Results are written to benchmarks/results/lm.json after every run, and a
rerun skips the rows already there with the same settings (resumable; run it with nohup).
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

TARGET = RESULTS / "lm.json"
# method -> the distill: block of its run (ce+forward_kl: the first run, with the CE baseline beside it)
METHODS: dict[str, dict[str, Any]] = {
    "ce+forward_kl": {"response_loss": "forward_kl"},
    "reverse_kl": {"response_loss": "reverse_kl"},
    "jsd": {"response_loss": "jsd", "response_options": {"beta": 0.5}},
    "skew_kl": {"response_loss": "skew_kl", "response_options": {"alpha": 0.1}},
    "forward_kl+ce": {"response_loss": "forward_kl", "hard_weight": 0.5},
}


def recipe(method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    return {
        "name": f"lm-{method}",
        "data": {
            "dataset": "kjv",
            "max_length": 128,
            "train_subset": args.train_blocks,
            "eval_subset": args.eval_blocks,
        },
        "teacher": {
            "model": {"kind": "causal_lm", "path": "smollm2"},
            "cache": {"top_k": 32, "tail": "renormalize", "dir": str(work / "teacher-cache")},
        },
        "student": {
            "model": {"kind": "causal_lm", "layers": args.layers},
            "baseline": method == "ce+forward_kl",
            "train": {
                "epochs": args.epochs,
                "batch_size": 8,
                "eval_batch_size": 8,
                "optimizer": {"name": "adamw", "lr": 2e-4, "weight_decay": 0.0},
                "lr_schedule": {"name": "cosine", "warmup_steps": 10, "final_factor": 0.1},
                "log_every": 10,
            },
        },
        "distill": {"temperature": 1.0, "kd_weight": 1.0, "hard_weight": 0.0, **METHODS[method]},
        "generation": {"samples": 3, "max_new_tokens": 24, "prompt_tokens": 12},
    }


def row_summary(row: dict[str, Any]) -> dict[str, Any]:
    details = row["details"]
    return {
        "next_token_accuracy": row["score"]["mean"],
        "test_perplexity": details["test_perplexity"],
        "teacher_kl": details.get("teacher_kl"),
        "train_tokens_per_second": details.get("train_tokens_per_second"),
        "generation_tokens_per_second": details.get("generation_tokens_per_second"),
        "parameters": row["parameters"],
        "size_bytes": row["size_bytes"],
        "generations": details.get("generations"),
    }


def markdown(record: dict[str, Any]) -> str:
    teacher = record["teacher"]
    lines = [
        "| student | test perplexity | vs CE | KL to teacher | next-token acc. | train tokens/s |",
        "|---|---|---|---|---|---|",
        f"| teacher (30 layers) | {teacher['test_perplexity']:.2f} | | | "
        f"{100 * teacher['next_token_accuracy']:.2f}% | |",
    ]
    ce = record["rows"].get("ce", {}).get("test_perplexity")
    for name, row in record["rows"].items():
        relative = f"{100 * (row['test_perplexity'] / ce - 1):+.1f}%" if ce and name != "ce" else ""
        kl = "" if row["teacher_kl"] is None else f"{row['teacher_kl']:.3f}"
        speed = "" if row["train_tokens_per_second"] is None else f"{row['train_tokens_per_second']:.0f}"
        lines.append(
            f"| {name} | {row['test_perplexity']:.2f} | {relative} | {kl} | "
            f"{100 * row['next_token_accuracy']:.2f}% | {speed} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--train-blocks", type=int, default=1500)
    parser.add_argument("--eval-blocks", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-lm"))
    parser.add_argument("--quick", action="store_true", help="a few blocks, to check the script runs")
    args = parser.parse_args()
    if args.quick:
        args.train_blocks, args.eval_blocks, args.layers = 16, 4, 2
    torch.set_num_threads(2)
    work = Path(args.work)
    settings = {key: getattr(args, key) for key in ("layers", "train_blocks", "eval_blocks", "epochs")}
    record = read_json(TARGET) if TARGET.is_file() and not args.quick else None
    if record is None or record.get("settings") != settings:
        record = {"benchmark": "lm", "settings": settings, "rows": {}, "runs": {}}
    for method in args.methods.split(","):
        if method in record["runs"]:
            print(f"{method}: already in {TARGET.name}, skipped", flush=True)
            continue
        raw = recipe(method, args, work)
        out = work / method
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        results = run_recipe(validate_recipe(raw, f"benchmark lm {method}"), raw, out, show_progress=False)
        rows = {row["role"]: row for row in results["rows"]}
        if "baseline" in rows:
            record["rows"]["ce"] = row_summary(rows["baseline"])
        record["rows"][method.removeprefix("ce+")] = row_summary(rows["distilled"])
        teacher = results["teacher"]
        record["teacher"] = {
            "next_token_accuracy": teacher["score"],
            "test_perplexity": teacher["details"]["test_perplexity"],
            "parameters": teacher["parameters"],
            "generations": teacher["details"].get("generations"),
        }
        record["runs"][method] = {"minutes": (time.perf_counter() - started) / 60}
        record["table"] = markdown(record)
        record["versions"] = library_versions()
        record["command"] = "python -m benchmarks.lm"
        if not args.quick:
            atomic_write_json(TARGET, record)
        print(f"{method}: {record['runs'][method]['minutes']:.1f} min\n{record['table']}", flush=True)


if __name__ == "__main__":
    main()
