"""Sparse networks on MNIST at 90% and 98% sparsity: trained sparse from scratch (SNIP, RigL) against
magnitude pruning after dense training (Zhu & Gupta's gradual schedule) and the dense network, each on
labels alone and distilled from the dense teacher.

    python -m benchmarks.sparse_mnist [--seeds 0 1 2] [--epochs 20] [--work DIR]

Every network is LeNet-300-100 (784-300-100-10 ReLU; 266,200 prunable weights) trained with Adam
(lr 1.2e-3, batch 100, constant lr) for ``--epochs`` epochs; the teacher is the same architecture
trained densely on labels (seed 0). Rows:

- dense: the network trained on labels, or distilled (KD at the recipe's T = 4, hard weight 0.5);
- SNIP (Lee et al. 2019): pruned at initialisation by |w · ∂L/∂w| on one batch of 100, global ranking;
- RigL (Evci et al. 2020): ERK distribution, ΔT = 100 steps, α = 0.3 cosine, T_end = 75% of training;
- magnitude after training: the dense-on-labels network pruned on Zhu & Gupta's cubic schedule over the
  first half of ``--epochs`` more epochs (masks recomputed every 100 steps), so it trains twice as long.

Test accuracy at the final epoch (nothing is selected on the test split), mean ± sd over the seeds.
The budget (2 CPU cores, under 60 minutes) sets the epochs; the papers train MNIST for far longer
(SNIP: 250k iterations), so absolute numbers sit below theirs. Results are written after every row
(the run resumes from ``--work``). Writes benchmarks/results/sparse_mnist.json.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from benchmarks.nlp_common import RESULTS, ROOT, mean_std
from distill.compress.base import CompressState, CompressStep
from distill.compress.masks import sparsity_of
from distill.compress.prune import Prune, PruneSchedule
from distill.compress.recover import steps_per_epoch
from distill.compress.rigl import RigL
from distill.compress.snip import Snip
from distill.run.recipe import validate_recipe
from distill.run.runner import make_context
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

SPARSITIES = (0.9, 0.98)
TEACHERS = {"labels": "none", "distilled": "teacher"}


def recipe(epochs: int) -> dict:
    train = {
        "epochs": epochs,
        "batch_size": 100,
        "optimizer": {"name": "adam", "lr": 1.2e-3},
        "lr_schedule": {"name": "constant"},
        "log_every": 200,
    }
    return {
        "name": "sparse-mnist",
        "data": {"dataset": "mnist", "data_dir": str(ROOT.parent / "shared" / "data" / "mnist")},
        "teacher": {"model": {"kind": "mlp", "hidden": [300, 100]}, "seed": 0, "train": train},
        "student": {"model": {"kind": "mlp", "hidden": [300, 100]}, "train": train},
        "distill": {"response_loss": "kd", "temperature": 4.0, "kd_weight": 0.5, "hard_weight": 0.5},
    }


def steps(epochs: int, context) -> list[tuple[str, float, str, CompressStep]]:
    """(method, sparsity, labels|distilled, step) for every sparse row."""
    half = epochs * steps_per_epoch(context.task, 100) // 2
    rows = []
    for sparsity in SPARSITIES:
        for how, teacher in TEACHERS.items():
            rows.append(("SNIP", sparsity, how, Snip(sparsity=sparsity, epochs=epochs, teacher=teacher)))
            rows.append(("RigL", sparsity, how, RigL(sparsity=sparsity, epochs=epochs, teacher=teacher)))
            gradual = PruneSchedule(kind="cubic", steps=half, every=100, epochs=epochs, teacher=teacher)
            rows.append(("magnitude after training", sparsity, how, Prune(amount=sparsity, schedule=gradual)))
    return rows


def run(seeds: list[int], epochs: int, work: Path, found: dict) -> dict:
    raw = recipe(epochs)
    context = make_context(validate_recipe(raw), raw, work, resume=True, show_progress=False)
    teacher = context.teacher().model
    for seed in seeds:
        dense = {}
        for how, choice in TEACHERS.items():
            model = context.build_student(seed)
            objective = context.objective(teacher if choice == "teacher" else None, model)
            context.train(objective, work / f"seed-{seed}" / f"dense-{how}", seed, f"dense {how}", evaluate=False)
            dense[how] = model
            record(found, ("dense", 0.0, how), seed, 100 * context.task.score(model), 0.0)
        for index, (method, sparsity, how, step) in enumerate(steps(epochs, context), start=1):
            start = copy.deepcopy(dense["labels"])  # magnitude pruning starts from the trained dense network
            folder = work / f"seed-{seed}" / "sparse"
            state = CompressState(context, seed, start, folder, context.task, teacher=teacher)
            step.apply(state, index)
            score = 100 * context.task.score(state.model)
            record(found, (method, sparsity, how), seed, score, sparsity_of(state.model))
            print(f"seed {seed} {method} {100 * sparsity:g}% {how}: {score:.2f}", flush=True)
            atomic_write_json(RESULTS / "sparse_mnist.partial.json", found)
    return found


def record(found: dict, key: tuple[str, float, str], seed: int, accuracy: float, sparsity: float) -> None:
    entry = found.setdefault(" | ".join(map(str, key)), {"method": key[0], "sparsity": key[1], "teacher": key[2]})
    entry.setdefault("accuracy", {})[str(seed)] = accuracy
    entry["measured_sparsity"] = sparsity


def table(found: dict) -> str:
    lines = [
        "| method | sparsity | on labels (test %) | distilled from the dense teacher (test %) |",
        "|---|---|---|---|",
    ]
    keys = sorted({(e["method"], e["sparsity"]) for e in found.values()}, key=lambda k: (k[1], k[0] != "dense"))
    for method, sparsity in keys:
        cells = []
        for how in TEACHERS:
            values = list(found.get(f"{method} | {sparsity} | {how}", {}).get("accuracy", {}).values())
            cells.append("{:.2f} ± {:.2f}".format(*mean_std(values)) if values else "–")
        lines.append(f"| {method} | {100 * sparsity:g}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--work", type=Path, default=None, help="run folder kept between runs (resumable)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="distill-sparse-"))
    started = time.perf_counter()
    found = run(args.seeds, args.epochs, work, {})
    results = {
        "benchmark": "sparse_mnist",
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "sparsities": list(SPARSITIES)},
        "rows": found,
        "table": table(found),
        "minutes": (time.perf_counter() - started) / 60,
        "versions": library_versions(),
    }
    print(results["table"])
    atomic_write_json(RESULTS / "sparse_mnist.json", results)
    (RESULTS / "sparse_mnist.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
