"""What distill's loop costs over a hand-written one: the same models, data order, optimizer, loss.

    python -m benchmarks.overhead [--repeats 5] [--examples 6000] [--epochs 2] [--pairs hinton_mnist,minilm]

(a) Hinton's MNIST pair: the 784-1200-1200-10 teacher (as initialised: the cost does not depend on its
weights) and the 784-800-800-10 student, KD at T = 20 plus 0.1 x CE, SGD with Nesterov momentum, cosine
schedule, batch 128. distill runs the recipe's Distiller through its Trainer (progress off, a metrics.jsonl
record every ``log_every`` steps, a verified checkpoint after each epoch). The hand loop is plain PyTorch: the
same DataLoader order (the Trainer's seeded generator), the teacher under ``no_grad``, ``kd_loss`` + CE,
``LambdaLR`` on the same schedule, a JSON line every ``log_every`` steps and a safetensors file of the student
after each epoch. Both end with the same weights (checked): only the framework differs.

The two alternate, ``--repeats`` times each (interleaved, so that a slow moment of the machine hits both, and
in ABBA order: odd repeats run the hand loop first, so that a drift of the machine's speed favours neither);
the ratio is the median of the per-repeat ratios of wall time per optimizer step. Writes
benchmarks/results/overhead.json. Target: at most 1.05x.

(b) MiniLM-L6 -> 3 layers on SST-2 with KD + hidden MSE + attention KL at batch 32 x 64 tokens
(``benchmarks/overhead_minilm.py``; ``--text-examples`` sentences), measured the same way.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks.hand_loop import train_by_hand
from benchmarks.nlp_common import RESULTS, ROOT
from benchmarks.overhead_minilm import hand_loop as minilm_hand_loop
from benchmarks.overhead_minilm import minilm_recipe
from distill.losses import kd_loss
from distill.run.recipe import validate_recipe
from distill.run.runner import make_context
from distill.train.atomic import atomic_write_json, read_json
from distill.train.checkpoint import library_versions

TARGET = RESULTS / "overhead.json"
DATA = ROOT.parent / "shared" / "data" / "mnist"


def mnist_recipe(examples: int, epochs: int) -> dict:
    train = {
        "epochs": epochs,
        "batch_size": 128,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
        "lr_schedule": {"name": "cosine", "warmup_steps": 10},
        "log_every": 20,
        "cpu": True,
    }
    return {
        "name": "overhead-mnist",
        "data": {"dataset": "mnist", "data_dir": str(DATA), "train_subset": examples},
        "teacher": {"model": {"kind": "mlp", "hidden": [1200, 1200]}, "seed": 0, "train": train},
        "student": {"model": {"kind": "mlp", "hidden": [800, 800]}, "train": train},
        "distill": {"response_loss": "kd", "temperature": 20.0, "kd_weight": 1.0, "hard_weight": 0.1},
    }


def hand_loop(teacher, student, task, settings, distill, folder: Path, seed: int = 0) -> int:
    """The same training in plain PyTorch; returns the optimizer steps taken."""
    options = settings.optimizer
    optimizer = torch.optim.SGD(
        student.parameters(), lr=options.lr, momentum=options.momentum, nesterov=options.nesterov
    )
    generator = torch.Generator()
    loader = DataLoader(task.train, batch_size=settings.batch_size, shuffle=True, generator=generator)
    teacher.eval()

    def loss_of(batch) -> torch.Tensor:
        inputs, labels = batch
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        logits = student(inputs)
        soft = kd_loss(logits, teacher_logits, temperature=distill.temperature)
        return distill.kd_weight * soft + distill.hard_weight * F.cross_entropy(logits, labels)

    return train_by_hand(student, optimizer, loader, generator, settings, folder, loss_of, seed)


PAIRS: dict[str, dict[str, Any]] = {
    "hinton_mnist": {
        "title": "Hinton MNIST 1200-1200 -> 800-800, batch 128",
        "recipe": mnist_recipe,
        "hand": hand_loop,
    },
    "minilm": {
        "title": "MiniLM-L6 -> 3 layers, KD + hidden MSE + attention KL, batch 32 x 64",
        "recipe": minilm_recipe,
        "hand": minilm_hand_loop,
    },
}


def measure(pair: str, examples: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Alternate distill's Trainer and the hand loop ``args.repeats`` times on ``pair``; its row."""
    raw = PAIRS[pair]["recipe"](examples, args.epochs)
    recipe = validate_recipe(raw, "benchmark overhead")
    context = make_context(recipe, raw, work, show_progress=False)
    teacher = context.build_teacher(recipe.teacher.model, seed=0)
    initial = context.build_student(0, source=teacher)
    settings, distill = recipe.student.train, recipe.distill
    per_step: dict[str, list[float]] = {"distill": [], "hand": []}
    final: dict[str, dict] = {}
    steps: dict[str, int] = {}

    def run_distill(repeat: int) -> None:
        student = copy.deepcopy(initial)
        objective = context.distiller(teacher, student, context.task)
        objective.teacher_cache = None  # the hand loop runs the teacher on every batch too
        torch.manual_seed(repeat)  # the student's dropout draws: the same in both loops
        started = time.perf_counter()
        record = context.train(objective, work / f"{pair}-distill-{repeat}", 0, "overhead", evaluate=False)
        steps["distill"] = record["step"]
        per_step["distill"].append((time.perf_counter() - started) / record["step"])
        final["distill"] = {name: value.clone() for name, value in student.state_dict().items()}

    def run_hand(repeat: int) -> None:
        student = copy.deepcopy(initial)
        torch.manual_seed(repeat)
        started = time.perf_counter()
        taken = PAIRS[pair]["hand"](teacher, student, context.task, settings, distill, work / f"{pair}-hand-{repeat}")
        steps["hand"] = taken
        per_step["hand"].append((time.perf_counter() - started) / taken)
        final["hand"] = student.state_dict()

    for repeat in range(args.repeats):
        # ABBA: odd repeats run the hand loop first, so a drift of the machine's speed favours neither
        for run in (run_distill, run_hand) if repeat % 2 == 0 else (run_hand, run_distill):
            run(repeat)
        assert steps["hand"] == steps["distill"], steps
        milliseconds = {name: 1000 * values[-1] for name, values in per_step.items()}
        print(
            f"{pair} repeat {repeat}: distill {milliseconds['distill']:.2f} ms/step, hand {milliseconds['hand']:.2f}",
            flush=True,
        )
    ratios = [d / h for d, h in zip(per_step["distill"], per_step["hand"], strict=True)]
    return {
        "distill_ms_per_step": 1000 * statistics.median(per_step["distill"]),
        "hand_ms_per_step": 1000 * statistics.median(per_step["hand"]),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "ms_per_step": {name: [1000 * value for value in values] for name, values in per_step.items()},
        "steps": steps["distill"],
        "examples": examples,
        "largest_weight_difference": max(
            float((final["distill"][name] - final["hand"][name]).abs().max()) for name in final["hand"]
        ),
    }


def markdown(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| pair | distill ms/step | hand-written ms/step | ratio (median of repeats) | final weights differ by |",
        "|---|---|---|---|---|",
    ]
    for pair, row in rows.items():
        lines.append(
            f"| {PAIRS[pair]['title']} | {row['distill_ms_per_step']:.2f} | {row['hand_ms_per_step']:.2f} | "
            f"{row['ratio']:.3f}x | {row['largest_weight_difference']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--examples", type=int, default=6000)
    parser.add_argument("--text-examples", type=int, default=1280)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-overhead"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # the first optimizer imports torch._dynamo
    record = read_json(TARGET) if TARGET.exists() else {"rows": {}}
    for pair in args.pairs.split(","):
        examples = args.text_examples if pair == "minilm" else args.examples
        record["rows"][pair] = measure(pair, examples, args, work)
        record.update(
            benchmark="overhead",
            settings={"repeats": args.repeats, "epochs": args.epochs},
            table=markdown(record["rows"]),
            versions=library_versions(),
            command="python -m benchmarks.overhead",
        )
        atomic_write_json(TARGET, record)  # after each pair: a later --pairs run keeps the others
    print(record["table"])


if __name__ == "__main__":
    main()
