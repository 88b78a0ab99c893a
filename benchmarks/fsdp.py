"""DDP against FSDP (``train.fsdp``) for a causal-LM student in 2 CPU processes, side by side.

    python -m benchmarks.fsdp [--blocks 128] [--rounds 1]

``torchrun --nproc-per-node 2 -m distill run`` of the same recipe twice, once plain (DDP: each process holds
the whole student, its gradients and AdamW state) and once with ``train.fsdp: {}`` (the student's decoder
layers and the whole model are FSDP2 units: each process holds half of every parameter). The recipe: the
packaged SmolLM2-135M teacher read from its top-32 cache (filled by the first run, outside the timing of
the second), a student of 6 of its 30 layers, ``--blocks`` KJV blocks of 128 tokens, batch 4 per process
(8 in all), one epoch, AdamW. Reports per row: the trained parameters' bytes each process holds (from the
run's own ``fsdp`` record in metrics.jsonl; the gradients and AdamW's two moments shrink alike), the peak
resident memory of the larger process (sampled every 0.1 s; on CPU this is where the weights live, and it
also holds the teacher and, under FSDP, the host copy that checkpoints gather into), and seconds per
optimizer step of the epoch. Rows run in interleaved rounds. Writes benchmarks/results/fsdp.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import yaml

from benchmarks.lm import recipe as lm_recipe
from benchmarks.nlp_common import RESULTS, ROOT
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

TARGET = RESULTS / "fsdp.json"
ROWS = ("ddp", "fsdp")


def _recipe(row: str, blocks: int, work: Path) -> dict:
    options = SimpleNamespace(layers=6, train_blocks=blocks, eval_blocks=8, epochs=1, lr=5e-4)
    raw = lm_recipe("forward_kl+ce", options, work)
    raw["name"] = f"fsdp-{row}"
    raw["generation"] = {"samples": 0}
    train = raw["student"]["train"]
    train |= {"batch_size": 4, "eval_batch_size": 4, "cpu": True, "log_every": 4}
    train.pop("checkpoint_every_steps")
    if row == "fsdp":
        train["fsdp"] = {}
    return raw


def _peak_of_workers(launcher: subprocess.Popen) -> int:
    """The largest resident memory any worker of ``launcher`` (torchrun) reached, sampled until it exits."""
    peaks: dict[int, int] = {}
    parent = psutil.Process(launcher.pid)
    while launcher.poll() is None:
        try:
            for child in parent.children(recursive=True):
                peaks[child.pid] = max(peaks.get(child.pid, 0), child.memory_info().rss)
        except psutil.Error:  # a worker ended between the listing and the reading
            pass
        time.sleep(0.1)
    return max(peaks.values(), default=0)


def one_run(row: str, blocks: int, work: Path) -> dict:
    out = work / row
    recipe_path = work / f"{row}.yaml"
    recipe_path.write_text(yaml.safe_dump(_recipe(row, blocks, work)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += ["-m", "distill", "run", str(recipe_path), "--out", str(out), "--quiet"]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    if out.exists():
        subprocess.run(["rm", "-rf", str(out)], check=True)
    launcher = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = _peak_of_workers(launcher)
    if launcher.returncode != 0:
        raise SystemExit(f"{row}: distill run failed:\n{launcher.stderr.read().decode()[-3000:]}")
    records = [json.loads(line) for line in (out / "seed-0" / "distilled" / "metrics.jsonl").read_text().splitlines()]
    epoch = next(record for record in records if record["event"] == "epoch")
    sharding = next((record for record in records if record["event"] == "fsdp"), None)
    return {
        "seconds_per_step": epoch["seconds"] / epoch["step"],
        "tokens_per_second": epoch.get("tokens_per_second"),
        "peak_rss_bytes": peak,
        "parameter_bytes_per_process": sharding["parameter_bytes_this_process"] if sharding else None,
        "parameter_bytes": sharding["parameter_bytes"] if sharding else None,
        "units": len(sharding["units"]) if sharding else 0,
    }


def markdown(rows: dict[str, dict]) -> str:
    ddp = rows["ddp"]
    whole = ddp["parameter_bytes_per_process"]
    lines = [
        "| row | student parameters per process | vs DDP | peak RSS, larger process | vs DDP | s per step | vs DDP |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        held = row["parameter_bytes_per_process"] or whole
        lines.append(
            f"| {name} | {held / 2**20:.0f} MiB | {held / whole:.2f}x | {row['peak_rss_bytes'] / 2**20:.0f} MiB | "
            f"{row['peak_rss_bytes'] / ddp['peak_rss_bytes']:.2f}x | {row['seconds_per_step']:.2f} | "
            f"{row['seconds_per_step'] / ddp['seconds_per_step']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench-fsdp"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    one_run("ddp", args.blocks, work)  # fills the teacher's top-k cache: not a measured run
    measured: dict[str, list[dict]] = {row: [] for row in ROWS}
    for _ in range(args.rounds):
        for row in ROWS:
            measured[row].append(one_run(row, args.blocks, work))
            print(row, measured[row][-1], flush=True)
    rows = {}
    for row, runs in measured.items():
        rows[row] = dict(runs[0])
        for name in ("seconds_per_step", "peak_rss_bytes"):
            rows[row][name] = statistics.median(run[name] for run in runs)
    # DDP's processes each hold the whole student (the FSDP run's record counts it)
    rows["ddp"]["parameter_bytes_per_process"] = rows["fsdp"]["parameter_bytes"]
    table = markdown(rows)
    print(table)
    settings = {"blocks": args.blocks, "rounds": args.rounds, "processes": 2, "layers": 6, "batch_per_process": 4}
    record = {"benchmark": "fsdp", "settings": settings, "rows": rows, "table": table}
    atomic_write_json(TARGET, {**record, "versions": library_versions(), "command": "python -m benchmarks.fsdp"})


if __name__ == "__main__":
    main()
