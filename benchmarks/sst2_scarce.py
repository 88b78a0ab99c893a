"""Where distillation pays: scarce labels, plentiful text (Hinton et al. 2015's transfer set, on SST-2).

    python -m benchmarks.sst2_scarce [--seeds 0 1 2] [--labelled 4000] [--unlabeled N] [--quick]

The teacher (all-MiniLM-L6-v2 + a head) is fine-tuned on ``--labelled`` SST-2 training sentences only.
The 3-layer student (teacher layers 0, 2, 5, embeddings and head copied) is then trained three ways:

* fine-tuned alone on the labelled sentences (hard labels, 2 epochs);
* distilled on the labelled sentences (KD at T=2, KL·T² + hard CE, 2 epochs);
* distilled on the labelled sentences plus ``--unlabeled`` further SST-2 training sentences whose labels
  are never read (written to a JSONL file without them and given to the recipe as ``data.unlabeled``);
  ``--transfer-epochs`` passes over this larger set (default 1: already 8x the steps of the rows above).

The teacher's outputs on the transfer set are computed once and shared by every seed (the run context's
teacher cache). Every student is scored on the full SST-2 dev set after its last epoch. Rows are written
to benchmarks/results/sst2_scarce.json as they finish; a run stopped part-way resumes with the same
``--work`` folder (trained stages are read back, not retrained).
"""

from __future__ import annotations

import argparse
import json
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
    mean_std,
    scores,
    settings,
    student,
    timed,
    train_settings,
)
from distill.data.labelled import load_text_data
from distill.tasks.text_files import preset_files, seeded_subset
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

LAYERS = 3
SPLIT_SEED = 0
ALONE = Method("fine-tuned alone", response_loss=None)
KD = Method("logits KD")


def write_transfer_set(path: Path, labelled: int, unlabeled: int | None) -> int:
    """``unlabeled`` SST-2 training sentences outside the labelled subset (all of them when None), texts
    only, as JSONL; the labelled subset is the one ``data.train_subset`` draws with the same seed."""
    data = load_text_data(preset_files("sst2"))
    total = len(data.train.inputs)
    chosen = set(seeded_subset(total, labelled, SPLIT_SEED))
    rest = [i for i in range(total) if i not in chosen]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    picked = sorted(rest[i] for i in order[: unlabeled if unlabeled is not None else len(rest)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"sentence": data.train.inputs[i]}) + "\n" for i in picked))
    return len(picked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labelled", type=int, default=4000)
    parser.add_argument("--unlabeled", type=int, default=None, help="default: every other SST-2 train sentence")
    parser.add_argument("--epochs", type=int, default=2, help="epochs on the labelled sentences")
    parser.add_argument("--transfer-epochs", type=int, default=1, help="epochs on labelled + unlabelled")
    parser.add_argument("--work", default="/tmp/distill-sst2-scarce", help="run folders; reuse it to resume")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 labelled, 400 unlabelled, 1 seed")
    parser.add_argument("--output", default=str(RESULTS / "sst2_scarce.json"))
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.labelled, args.unlabeled, args.epochs = [0], 200, 400, 1
    torch.set_num_threads(2)
    started = time.perf_counter()
    work = Path(args.work)
    count = write_transfer_set(work / "unlabeled.jsonl", args.labelled, args.unlabeled)
    teacher_train = settings(teacher_train_epochs(args), lr=5e-5, warmup_steps=10)
    raw = base_recipe("sst2", args.labelled, teacher_train, settings(args.epochs, lr=1e-4, warmup_steps=10), LAYERS)
    raw["data"]["unlabeled"] = str(work / "unlabeled.jsonl")
    context = bench_context(raw, work / "runs", resume=True)
    transfer = context.task.with_unlabeled()  # one task object: its teacher cache is shared by every seed
    assert transfer.info["unlabeled_examples"] == count

    teacher, teacher_seconds = timed(lambda: context.teacher().model)
    teacher_dev = scores(teacher, context)["dev"]
    print(f"teacher on {args.labelled} labelled: dev {teacher_dev:.2f}%  ({teacher_seconds / 60:.1f} min)", flush=True)
    transfer_name = f"logits KD on {args.labelled} + {count} unlabelled"
    rows_spec = [
        ("alone", f"fine-tuned alone on {args.labelled}", ALONE, None, args.epochs),
        ("kd", f"logits KD on {args.labelled}", KD, None, args.epochs),
        (f"kd-transfer-{count}", transfer_name, KD, transfer, args.transfer_epochs),
    ]
    rows: dict[str, dict] = {}
    earlier = _earlier_seconds(Path(args.output))  # a resumed row keeps the training time it first took
    for seed in args.seeds:
        for slug, name, method, task, epochs in rows_spec:
            model = student(context, teacher, LAYERS, seed, "uniform")
            folder = work / "runs" / f"seed-{seed}" / f"{slug}-{epochs}-epochs"
            train = train_settings(epochs, lr=1e-4, warmup_steps=10)
            _, seconds = timed(distil, context, teacher, model, method, folder, seed, "uniform", train, task)
            row = rows.setdefault(name, {"method": name, "epochs": epochs, "dev": [], "seconds": [], "seeds": []})
            row["dev"].append(scores(model, context)["dev"])
            row["seconds"].append(earlier.get((name, seed), seconds))
            row["seeds"].append(seed)
            print(f"  {name:45s} seed {seed}: dev {row['dev'][-1]:.2f}  ({seconds:.0f} s)", flush=True)
            _write(args, rows, teacher_dev, teacher_seconds, count, started, complete=False)
    table = _write(args, rows, teacher_dev, teacher_seconds, count, started, complete=True)
    print(table)
    print(f"\ntotal {(time.perf_counter() - started) / 60:.1f} min")


def _earlier_seconds(path: Path) -> dict[tuple[str, int], float]:
    if not path.exists():
        return {}
    rows = json.loads(path.read_text()).get("rows", [])
    return {(row["method"], seed): s for row in rows for seed, s in zip(row["seeds"], row["seconds"], strict=True)}


def _write(args, rows: dict, teacher_dev: float, teacher_seconds: float, count: int, started: float, complete: bool):
    table, results = _table(rows, teacher_dev, args.labelled, teacher_train_epochs(args))
    payload = {
        "benchmark": "sst2_scarce",
        "complete": complete,
        "teacher": {"model": "all-MiniLM-L6-v2 + head", "dev_accuracy": teacher_dev, "train_seconds": teacher_seconds},
        "settings": {
            "labelled": args.labelled,
            "unlabeled": count,
            "epochs": args.epochs,
            "transfer_epochs": args.transfer_epochs,
            "seeds": args.seeds,
            "student_layers": LAYERS,
            "student_lr": 1e-4,
            "teacher_lr": 5e-5,
            "teacher_epochs": teacher_train_epochs(args),
            "batch_size": 32,
            "temperature": 2.0,
            "split_seed": SPLIT_SEED,
        },
        "rows": results,
        "table": table,
        "minutes_so_far": (time.perf_counter() - started) / 60,
        "versions": library_versions(),
    }
    atomic_write_json(Path(args.output), payload)
    return table


def teacher_train_epochs(args: argparse.Namespace) -> int:
    return 1 if args.quick else 3


def _table(rows: dict, teacher_dev: float, labelled: int, teacher_epochs: int) -> tuple[str, list[dict]]:
    lines = [
        "| student (3 layers) | epochs | dev accuracy (%) | % of teacher | vs fine-tuned alone | train time (s) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| teacher (MiniLM-L6 fine-tuned on {labelled}) | {teacher_epochs} | {teacher_dev:.2f} | 100.0 | | |",
    ]
    alone = next(iter(rows.values()), None)
    results = []
    for row in rows.values():
        mean, std = mean_std(row["dev"])
        gain = mean - mean_std(alone["dev"])[0]
        seconds = mean_std(row["seconds"])[0]
        lines.append(
            f"| {row['method']} | {row['epochs']} | {fmt(row['dev'])} | {100 * mean / teacher_dev:.1f} | "
            f"{gain:+.2f} | {seconds:.0f} |"
        )
        results.append({**row, "dev_mean": mean, "dev_std": std, "kept_percent": 100 * mean / teacher_dev})
    return "\n".join(lines), results


if __name__ == "__main__":
    main()
