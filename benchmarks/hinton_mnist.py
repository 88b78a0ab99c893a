"""Reproduce Hinton et al. 2015's MNIST table with recipes/hinton-mnist.yaml.

    python benchmarks/hinton_mnist.py [--out runs/hinton-mnist-bench] [--resume] [key=value ...]

Trains the 1200-1200 teacher, the 800-800 student alone and the same student distilled at T=20
on the original MNIST IDX files (../shared/data/mnist), prints test errors (of 10,000) beside the
paper's 67 / 146 / 74, and writes benchmarks/results/hinton_mnist.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distill.run.recipe import load_recipe
from distill.run.results import find_row
from distill.run.runner import run_recipe
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

ROOT = Path(__file__).resolve().parents[1]
PAPER_ERRORS = {"teacher": 67, "student alone": 146, "student distilled (T=20)": 74}


def errors(accuracy: float, examples: int) -> int:
    return round((1 - accuracy) * examples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "runs" / "hinton-mnist-bench"))
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("overrides", nargs="*", help="recipe overrides, key.path=value")
    args = parser.parse_args()

    recipe, raw = load_recipe("hinton-mnist", args.overrides)
    started = time.perf_counter()
    results = run_recipe(recipe, raw, args.out, resume=args.resume, data_dir=args.data_dir)
    minutes = (time.perf_counter() - started) / 60

    examples = results["evaluation_examples"]
    ours = {
        "teacher": errors(results["teacher"]["score"], examples),
        "student alone": round(
            sum(errors(s["score"], examples) for s in find_row(results, "baseline")["seeds"])
            / len(find_row(results, "baseline")["seeds"])
        ),
        "student distilled (T=20)": round(
            sum(errors(s["score"], examples) for s in find_row(results, "distilled")["seeds"])
            / len(find_row(results, "distilled")["seeds"])
        ),
    }
    print(f"\nHinton et al. 2015, MNIST test errors (of {examples}); ours after {minutes:.1f} min\n")
    print("| model | paper | ours |")
    print("|---|---|---|")
    for row, paper in PAPER_ERRORS.items():
        print(f"| {row} | {paper} | {ours[row]} |")
    payload = {
        "benchmark": "hinton_mnist",
        "recipe": raw,
        "overrides": args.overrides,
        "test_examples": examples,
        "paper_test_errors": PAPER_ERRORS,
        "our_test_errors": ours,
        "results": results,
        "wall_minutes": minutes,
        "versions": library_versions(),
        "command": "python benchmarks/hinton_mnist.py " + " ".join(args.overrides),
    }
    target = ROOT / "benchmarks" / "results" / "hinton_mnist.json"
    atomic_write_json(target, payload)
    print(f"\nwrote {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
