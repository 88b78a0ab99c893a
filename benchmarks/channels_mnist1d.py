"""Structured channel pruning of the MNIST-1D CNN (torch-pruning's dependency graph), with no recovery,
fine-tuned on labels, or distilled from the unpruned CNN; against the pruned shape trained from scratch.

    python -m benchmarks.channels_mnist1d [--seeds 0 1 2] [--epochs 30] [--recover-epochs 5] [--work DIR]

The CNN is recipes/transfer-mnist1d.yaml's teacher shape, (Conv1d k=3, BatchNorm, ReLU) x 2 per block
at 32, 64 and 128 channels, trained on MNIST-1D's labels (4,000 training signals) with AdamW (lr 3e-3,
cosine) for ``--epochs`` epochs, one per seed. Each row removes a fraction of every conv's output
channels (``scope: layer``; the classifier is kept), chosen by group L2 magnitude or by the group
first-order Taylor score on 8 training batches, so the network really shrinks (parameters and latency
fall); BatchNorm statistics are then re-estimated on 16 training batches (the step's default).
Recovery: ``--recover-epochs`` epochs at the recipe's lr, on labels alone or distilled from the
unpruned CNN (KD at T = 4, hard weight 0.5). The control trains the pruned shape from a fresh
initialisation for the full ``--epochs`` epochs, on labels or distilled from the unpruned CNN: is
pruning a trained CNN better than training the small one? Speed-up: median paired ratio of the unpruned
CNN's forward time to the pruned one's at batch 256, interleaved (seed 0's models). Test accuracy at
the final epoch, mean ± sd over seeds. Writes benchmarks/results/channels_mnist1d.json.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.nlp_common import RESULTS
from benchmarks.recovery_common import compressed_and_recovered, record, recovery_table, size_of
from distill.compress.base import CompressState
from distill.compress.prune import Prune
from distill.run.latency import interleaved_samples, paired_speedup
from distill.run.recipe import validate_recipe
from distill.run.runner import make_context
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

AMOUNTS = (0.5, 0.75)
METHODS = ("magnitude", "taylor")


def recipe(epochs: int) -> dict:
    train = {
        "epochs": epochs,
        "batch_size": 128,
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "lr_schedule": {"name": "cosine", "warmup_steps": 20},
        "log_every": 50,
    }
    model = {"kind": "cnn1d", "channels": [32, 64, 128], "convs_per_block": 2}
    return {
        "name": "channels-mnist1d",
        "data": {"dataset": "mnist1d"},
        "teacher": {"model": model, "train": train},
        "student": {"model": model, "train": train},
        "distill": {"response_loss": "kd", "temperature": 4.0, "kd_weight": 0.5, "hard_weight": 0.5},
    }


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model``'s architecture (pruned widths included) with fresh weights and statistics."""
    fresh = copy.deepcopy(model)
    torch.manual_seed(seed)
    for module in fresh.modules():
        if module is not fresh and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return fresh


def from_scratch(context, model: nn.Module, teacher: nn.Module, seed: int, folder: Path) -> dict[str, float]:
    """The pruned shape trained from a fresh start on labels and distilled from ``teacher``."""
    found = {}
    for how, source in (("labels", None), ("distilled", teacher)):
        fresh = reinitialised(model, seed)
        context.train(context.objective(source, fresh), folder / how, seed, f"scratch {how} s{seed}", evaluate=False)
        found[how] = 100 * context.task.score(fresh)
    return found


def speedups(dense: nn.Module, pruned: dict[str, nn.Module], probe: torch.Tensor) -> dict[str, float]:
    samples = interleaved_samples([dense, *pruned.values()], probe, min_rounds=20, budget_s=20)
    return {name: paired_speedup(samples[0], mine) for name, mine in zip(pruned, samples[1:], strict=True)}


def run(seeds: list[int], epochs: int, recover_epochs: int, work: Path) -> tuple[dict, dict]:
    raw = recipe(epochs)
    context = make_context(validate_recipe(raw), raw, work, resume=True, show_progress=False)
    lr = context.recipe.student.train.optimizer.lr
    score = lambda model: 100 * context.task.score(model)  # noqa: E731
    rows: dict = {}
    speed: dict = {}
    for seed in seeds:
        cnn = context.build_student(seed)
        context.train(context.objective(None, cnn), work / f"seed-{seed}" / "cnn", seed, f"cnn s{seed}", evaluate=False)
        record(rows, "CNN 32-64-128 (unpruned)", seed, {"size": size_of(cnn), "accuracy": {"none": score(cnn)}})
        pruned: dict[str, nn.Module] = {}
        teacher = copy.deepcopy(cnn)  # a student's teacher is frozen; every row prunes a trainable copy of cnn
        for amount in AMOUNTS:
            for method in METHODS:
                name = f"{100 * amount:g}% of channels ({method})"
                folder = work / f"seed-{seed}" / f"prune-{amount}-{method}"
                state = CompressState(context, seed, copy.deepcopy(cnn), folder, context.task, teacher=teacher)
                step = Prune(structure="channels", amount=amount, scope="layer", method=method)
                found, pruned[name] = compressed_and_recovered(state, step, recover_epochs, lr, score)
                record(rows, name, seed, found)
                print(f"seed {seed} {name}: {found['accuracy']}", flush=True)
            shape = pruned[f"{100 * amount:g}% of channels (magnitude)"]
            control = f"{100 * amount:g}% narrower, from scratch ({epochs} ep)"
            scratch = from_scratch(context, shape, teacher, seed, work / f"seed-{seed}" / f"scratch-{amount}")
            record(rows, control, seed, {"size": size_of(shape), "accuracy": scratch})
            atomic_write_json(RESULTS / "channels_mnist1d.partial.json", rows)
        if seed == seeds[0]:
            speed = speedups(cnn, pruned, context.task.sample_inputs(256))
    return rows, speed


def table(rows: dict, speed: dict) -> str:
    dense = rows["CNN 32-64-128 (unpruned)"]["size"]["bytes"]
    lines = recovery_table(rows, dense).splitlines()
    lines[0] += " CPU speed-up (batch 256) |"
    lines[1] += "---|"
    for index, name in enumerate(rows, start=2):
        lines[index] += f" {speed[name]:.2f}x |" if name in speed else " |"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--recover-epochs", type=int, default=5)
    parser.add_argument("--work", type=Path, default=None, help="run folder kept between runs (resumable)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="distill-channels-"))
    started = time.perf_counter()
    rows, speed = run(args.seeds, args.epochs, args.recover_epochs, work)
    results = {
        "benchmark": "channels_mnist1d",
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "recover_epochs": args.recover_epochs},
        "rows": rows,
        "speedup_batch_256": speed,
        "table": table(rows, speed),
        "minutes": (time.perf_counter() - started) / 60,
        "versions": library_versions(),
    }
    print(results["table"])
    atomic_write_json(RESULTS / "channels_mnist1d.json", results)
    (RESULTS / "channels_mnist1d.partial.json").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
