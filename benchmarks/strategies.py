"""Training strategies beyond one teacher, each run from its built-in recipe over 3 seeds.

    python benchmarks/strategies.py [--only ensemble,tree-mnist] [--quick]

Runs ``distill/recipes/{ensemble,transfer,mutual,self-distill,born-again,chain}-mnist1d.yaml`` (plus the
chain recipe again with ``student.chain=[]``, the direct student) and ``tree-{mnist,digits}.yaml`` with
the settings written in each recipe, prints one markdown table and writes
benchmarks/results/strategies.json (and the distilled MNIST tree's picture, tree_mnist.png). Test
accuracy at the final epoch, mean ± sample std over seeds 0, 1, 2 (ensemble members: over the 5 members).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from distill.run.recipe import load_recipe  # noqa: E402
from distill.run.runner import run_recipe  # noqa: E402
from distill.train.atomic import atomic_write_json  # noqa: E402
from distill.train.checkpoint import library_versions  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# (key, recipe, extra overrides, what the experiment shows)
EXPERIMENTS = [
    ("ensemble", "ensemble-mnist1d", [], "ensemble of 5 teachers (MNIST-1D)"),
    ("transfer", "transfer-mnist1d", [], "unlabeled transfer set the teacher never saw (MNIST-1D)"),
    ("mutual", "mutual-mnist1d", [], "deep mutual learning, 2 peers (MNIST-1D)"),
    ("self-distill", "self-distill-mnist1d", [], "be your own teacher, 3 exits (MNIST-1D)"),
    ("born-again", "born-again-mnist1d", [], "born-again generations (MNIST-1D)"),
    ("chain", "chain-mnist1d", [], "teacher assistant: CNN -> small CNN -> tiny CNN (MNIST-1D)"),
    ("direct", "chain-mnist1d", ["student.chain=[]"], "the same student distilled directly (MNIST-1D)"),
    ("tree-mnist", "tree-mnist", [], "soft decision tree, depth 8 (MNIST)"),
    ("tree-digits", "tree-digits", [], "soft decision tree, depth 6 (digits)"),
]
QUICK = ["seeds=[0]", "teacher.train.epochs=1", "student.train.epochs=1", "data.train_subset=1000"]
LABELS = {
    "baseline": "student on hard labels",
    "distilled": "student distilled",
    "distilled_single": "student distilled from one teacher",
}


def _pct(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.2f} ± {std:.2f}"


def _rows(key: str, title: str, results: dict) -> list[list[str]]:
    """Table rows of one experiment: the teacher (and its members), then every student kind."""
    rows = []
    teacher = results.get("teacher")
    if teacher is not None and key != "direct":  # the chain experiment already shows this teacher
        members = teacher.get("members", [])
        if members:
            accuracies = [m["score"]["mean"] for m in members]
            rows.append([title, "one teacher (each of the members)", _pct(accuracies), str(len(accuracies))])
        name = f"teacher: ensemble of {len(members)}" if members else "teacher"
        rows.append([title, name, _pct([teacher["score"]]), "1"])
    for summary in results["rows"]:
        kind = summary["role"]
        if key == "direct" and kind != "distilled":
            continue  # the chain experiment already has the baseline
        accuracies = [entry["score"] for entry in summary["seeds"]]
        label = "student distilled directly" if key == "direct" else LABELS.get(kind, summary["label"])
        if key == "chain" and kind == "distilled":
            label = "student distilled through the assistant"
        rows.append([title, label, _pct(accuracies), str(len(accuracies))])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", default="", help="comma-separated experiment keys: " + ",".join(e[0] for e in EXPERIMENTS)
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch, 1,000 examples: a smoke run")
    parser.add_argument("--output", default=str(RESULTS / "strategies.json"))
    args = parser.parse_args()
    chosen = [e for e in EXPERIMENTS if not args.only or e[0] in args.only.split(",")]
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="distill-strategies-"))
    started = time.perf_counter()
    table = [["experiment", "model", "test accuracy (%)", "seeds"]]
    experiments = {}
    for key, recipe_name, overrides, title in chosen:
        clock = time.perf_counter()
        recipe, raw = load_recipe(recipe_name, [*overrides, *(QUICK if args.quick else [])])
        results = run_recipe(recipe, raw, work / key, show_progress=False)
        minutes = (time.perf_counter() - clock) / 60
        experiments[key] = {"recipe": recipe_name, "overrides": overrides, "minutes": minutes, "results": results}
        table += _rows(key, title, results)
        print(f"{key}: {minutes:.1f} min", flush=True)
        picture = work / key / "seed-0" / "distilled" / "tree.png"
        if key == "tree-mnist" and picture.exists() and not args.quick:
            shutil.copyfile(picture, RESULTS / "tree_mnist.png")
    markdown = "\n".join(["| " + " | ".join(table[0]) + " |", "|" + " --- |" * len(table[0])])
    markdown += "\n" + "\n".join("| " + " | ".join(row) + " |" for row in table[1:])
    total = (time.perf_counter() - started) / 60
    print(markdown)
    print(f"\ntotal {total:.1f} min")
    payload = {
        "benchmark": "strategies",
        "command": "python benchmarks/strategies.py" + (" --quick" if args.quick else ""),
        "experiments": experiments,
        "table": markdown,
        "total_minutes": total,
        "torch_threads": torch.get_num_threads(),
        "versions": library_versions(),
    }
    atomic_write_json(Path(args.output), payload)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
