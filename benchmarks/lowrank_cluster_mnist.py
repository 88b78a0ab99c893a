"""Low-rank factorisation and weight clustering of Hinton's MNIST student (784-800-800-10): accuracy
against size, with no recovery, fine-tuned on labels, or distilled from the model before the step.

    python -m benchmarks.lowrank_cluster_mnist [--seeds 0 1 2] [--epochs 12] [--recover-epochs 2] [--work DIR]

The teacher is recipes/hinton-mnist.yaml's 1200-1200 network (dropout, 2-pixel jitter; seed 0) and
the student the 800-800 network distilled from it at T = 20, each trained for ``--epochs`` epochs
(the recipe trains 100 and 50; 2 CPU cores under 60 minutes set the budget). Each compression starts
from that student:

- low rank r: every Linear factorised by its truncated SVD where it saves parameters (the 800 x 10
  classifier never does at these ranks);
- cluster b bits: every Linear's weights replaced by the nearest of 2^b k-means centroids (Deep
  Compression), stored as a codebook and b-bit indices; recovery fine-tunes the centroids.

Recovery: ``--recover-epochs`` epochs of SGD at lr 0.01 (the recipe's Nesterov momentum and cosine
schedule with 500 warm-up steps) either on labels alone or distilled
from the uncompressed student at the recipe's T = 20 (KD weight 1, hard weight 0.1). Test accuracy at
the final epoch (nothing is selected on the test split), mean ± sd over seeds. KB on disk is the
safetensors file the compress pipeline writes (codebooks and packed indices for clustered layers).
Writes benchmarks/results/lowrank_cluster_mnist.json (a partial file after every row).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

from benchmarks.nlp_common import RESULTS, ROOT
from benchmarks.recovery_common import compressed_and_recovered, record, recovery_table, size_of
from distill.compress.base import CompressState, CompressStep
from distill.compress.cluster import Cluster
from distill.compress.lowrank import LowRank
from distill.run.recipe import load_recipe
from distill.run.runner import make_context
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

RECOVERY_LR = 0.01
STEPS: dict[str, CompressStep] = {
    "low rank 128": LowRank(rank=128),
    "low rank 32": LowRank(rank=32),
    "low rank 8": LowRank(rank=8),
    "cluster 4 bits": Cluster(bits=4),
    "cluster 2 bits": Cluster(bits=2),
    "cluster 1 bit": Cluster(bits=1),
}


def recipe(epochs: int) -> tuple:
    data_dir = str(ROOT.parent / "shared" / "data" / "mnist")
    overrides = [f"teacher.train.epochs={epochs}", f"student.train.epochs={epochs}", f"data.data_dir={data_dir}"]
    return load_recipe("hinton-mnist", overrides)


def run(seeds: list[int], epochs: int, recover_epochs: int, work: Path) -> dict:
    spec, raw = recipe(epochs)
    context = make_context(spec, raw, work, resume=True, show_progress=False)
    teacher = context.teacher().model
    score = lambda model: 100 * context.task.score(model)  # noqa: E731
    rows: dict = {"teacher (1200-1200)": {"size": size_of(teacher), "accuracy": {"none": {}}}}
    rows["teacher (1200-1200)"]["accuracy"]["none"]["0"] = score(teacher)
    for seed in seeds:
        student = context.build_student(seed)
        objective = context.objective(teacher, student)
        context.train(objective, work / f"seed-{seed}" / "student", seed, f"student s{seed}", evaluate=False)
        record(
            rows, "distilled student (800-800)", seed, {"size": size_of(student), "accuracy": {"none": score(student)}}
        )
        for name, step in STEPS.items():
            folder = work / f"seed-{seed}" / name.replace(" ", "-")
            state = CompressState(context, seed, copy.deepcopy(student), folder, context.task, teacher=teacher)
            found, _ = compressed_and_recovered(state, step, recover_epochs, RECOVERY_LR, score)
            record(rows, name, seed, found)
            print(f"seed {seed} {name}: {found['accuracy']}", flush=True)
            atomic_write_json(RESULTS / "lowrank_cluster_mnist.partial.json", rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--recover-epochs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="run folder kept between runs (resumable)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="distill-lowrank-"))
    started = time.perf_counter()
    rows = run(args.seeds, args.epochs, args.recover_epochs, work)
    dense = rows["distilled student (800-800)"]["size"]["bytes"]
    results = {
        "benchmark": "lowrank_cluster_mnist",
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "recover_epochs": args.recover_epochs},
        "rows": rows,
        "table": recovery_table(rows, dense),
        "minutes": (time.perf_counter() - started) / 60,
        "versions": library_versions(),
    }
    print(results["table"])
    atomic_write_json(RESULTS / "lowrank_cluster_mnist.json", results)
    (RESULTS / "lowrank_cluster_mnist.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
