"""SST-2 deployment table: teacher -> 3-layer distilled student -> FFN-pruned + recovery -> trimmed
vocabulary -> int8 (ONNX Runtime) -> exported ONNX, one ``distill run`` of ``recipes/sst2-deploy.yaml``.

    python -m benchmarks.compress [--seeds 0 1 2] [--work DIR] [--quick]

Columns: dev accuracy at the final epoch of each stage (mean ± std over seeds), % of the teacher,
parameters, non-zero parameters, bytes on disk of each row's artefact (the teacher's and students'
safetensors; a pruned model's tensors stored as bitmask + values; the ONNX file), CPU latency at batch
32 x 64 tokens and at batch 1 x 64 (every model timed interleaved, round by round, with the run's
threads), and the speed-up over the teacher's fp32 PyTorch forward. Targets (issue 15): the final
artefact >= 4x faster and >= 8x smaller than the teacher at >= 97% of its accuracy; int8 costs <= 0.5
points. ``--work`` keeps the run folder, so a killed benchmark resumes where it stopped. Writes
benchmarks/results/compress_sst2.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.nlp_common import RESULTS, ROOT
from distill.compress import run_compress
from distill.models.hf.loading import random_tokens
from distill.run.export import write_model_configs
from distill.run.recipe import resolve_recipe_path, validate_recipe
from distill.run.results import LatencyMeter, summarise
from distill.run.runner import header, make_context
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

RECIPE = "sst2-deploy"
SHARED = ROOT.parent / "shared" / "data"


def run(seeds: list[int], work: Path, quick: bool) -> dict:
    raw = yaml.safe_load(resolve_recipe_path(RECIPE).read_text())
    raw["seeds"] = seeds
    if quick:  # a smoke run: minutes, not the benchmark
        raw["data"]["train_subset"] = 300
        raw["data"]["eval_subset"] = 200
        for role in ("teacher", "student"):
            raw[role]["train"]["epochs"] = 1
    # the trimmed vocabulary covers every SST-2 training sentence (texts only, no labels; never dev)
    texts = work / "sst2-train-texts.txt"
    rows_of_train = (SHARED / "sst2" / "train.tsv").read_text().splitlines()[1:]
    texts.parent.mkdir(parents=True, exist_ok=True)
    texts.write_text("".join(line.split("\t", 1)[1] + "\n" for line in rows_of_train))
    raw["compress"] = [{"trim_vocab": {"texts": str(texts)}} if s == "trim_vocab" else s for s in raw["compress"]]
    recipe = validate_recipe(raw, f"benchmark {RECIPE}")
    started = time.perf_counter()
    context = make_context(recipe, raw, work, resume=True, show_progress=False)
    rows = recipe.strategy.run(context)
    rows += run_compress(context, rows, recipe.compress)
    write_model_configs(rows)
    teacher = context.trained_teacher
    results = summarise(
        rows,
        context.task.describe(),
        context.task.latency_probe(),
        header(recipe),
        teacher=teacher,
        teacher_score=context.task.score(teacher.model),
        repeats=context.task.latency_repeats,
    )
    single = LatencyMeter(random_tokens(context.task.vocab_size, 1, 64), repeats=30)
    single.measure([teacher.model, *(row.model for row in rows)])
    results["teacher"]["cpu_latency_ms_batch1"] = single(teacher.model)
    for entry in results["rows"]:
        model = next(row.model for row in rows if (row.role, row.index) == (entry["role"], entry["index"]))
        entry["cpu_latency_ms_batch1"] = single(model)
        entry["speedup_batch1"] = single.speedup(teacher.model, model)
    results["minutes"] = (time.perf_counter() - started) / 60
    return results


def table(results: dict) -> str:
    teacher = results["teacher"]
    lines = [
        "| model | dev accuracy (%) | % of teacher | parameters | non-zero | MB on disk | ms / 32x64 | ms / 1x64 "
        "| speed-up (32x64) | speed-up (1x64) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher (MiniLM-L6, fp32 PyTorch) | {100 * teacher['score']:.2f} | 100.0 | {teacher['parameters']:,} | "
        f"{teacher['nonzero_parameters']:,} | {teacher['size_bytes'] / 1e6:.1f} | {teacher['cpu_latency_ms']:.1f} | "
        f"{teacher['cpu_latency_ms_batch1']:.2f} | 1.0x | 1.0x |",
    ]
    for row in results["rows"]:
        score = row["score"]
        lines.append(
            f"| {row['label']} | {100 * score['mean']:.2f} ± {100 * score['std']:.2f} | "
            f"{100 * score['mean'] / teacher['score']:.1f} | {row['parameters']:,} | {row['nonzero_parameters']:,} | "
            f"{row['size_bytes'] / 1e6:.1f} | {row['cpu_latency_ms']:.1f} | {row['cpu_latency_ms_batch1']:.2f} | "
            f"{row['speedup']:.1f}x | {row['speedup_batch1']:.1f}x |"
        )
    return "\n".join(lines)


def targets(results: dict) -> dict:
    """The issue's targets for the final artefact, and the cost of the int8 step."""
    teacher, rows = results["teacher"], results["rows"]
    final = rows[-1]
    before_int8 = next(i for i, row in enumerate(rows) if row["label"].startswith("int8")) - 1
    return {
        "speedup": final["speedup"],
        "smaller": teacher["size_bytes"] / final["size_bytes"],
        "percent_of_teacher": 100 * final["score"]["mean"] / teacher["score"],
        "int8_cost_points": 100 * (rows[before_int8]["score"]["mean"] - rows[before_int8 + 1]["score"]["mean"]),
        "met": {
            "speedup >= 4": final["speedup"] >= 4,
            "smaller >= 8": teacher["size_bytes"] / final["size_bytes"] >= 8,
            ">= 97% of teacher": final["score"]["mean"] >= 0.97 * teacher["score"],
            "int8 <= 0.5 points": rows[before_int8]["score"]["mean"] - rows[before_int8 + 1]["score"]["mean"] <= 0.005,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=None, help="run folder kept between runs (resumable)")
    parser.add_argument("--quick", action="store_true", help="a smoke run on 300 examples; not the benchmark")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="distill-compress-"))
    results = run(args.seeds, work, args.quick)
    results["targets"] = targets(results)
    results["table"] = table(results)
    results["versions"] = library_versions()
    print(results["table"])
    print(results["targets"])
    if not args.quick:
        atomic_write_json(RESULTS / "compress_sst2.json", results)
    print(f"run folder: {work}")


if __name__ == "__main__":
    main()
