"""Peak training memory and step time of the memory savers, side by side: fp32, bf16 autocast, gradient
checkpointing, and both.

    python -m benchmarks.memory [--steps 8] [--batch 32] [--length 128]

One training step as distill takes it for a text student: the packaged MiniLM-L6 teacher (no gradient) and
a 3-layer student initialised from its layers 0, 2, 5, batch 32 x 128 tokens, Hinton KD on the logits plus
hidden-state MSE, AdamW. ``bf16`` runs both forwards under ``torch.autocast("cpu", torch.bfloat16)`` as
Accelerate's ``mixed_precision: bf16`` does; ``checkpointing`` is :func:`distill.train.memory.enable_
gradient_checkpointing` (``train.gradient_checkpointing``). Every setting runs in its own process, in
interleaved rounds; the peak is the resident memory sampled every 2 ms from the first step to the last,
less the resident memory before the first step (the models are not counted; gradients, AdamW's state and
the activations are). Step time is the median of the steps after two warm-up steps.
Writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.nlp_common import RESULTS
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions

TARGET = RESULTS / "memory.json"
SETTINGS = {
    "fp32": {"bf16": False, "checkpointing": False},
    "bf16": {"bf16": True, "checkpointing": False},
    "checkpointing": {"bf16": False, "checkpointing": True},
    "bf16+checkpointing": {"bf16": True, "checkpointing": True},
}


def _resident_bytes() -> int:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * 4096


class PeakSampler(threading.Thread):
    """The largest resident memory seen, sampled every 2 ms until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = _resident_bytes(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, _resident_bytes())
            time.sleep(0.002)


def one_setting(name: str, steps: int, batch: int, length: int) -> dict:
    """Train ``steps`` steps (after 2 warm-up steps) in this process; its time per step and peak memory."""
    import contextlib

    import torch
    import transformers

    from distill.losses import kd_loss
    from distill.models.hf.loading import packaged_minilm_path
    from distill.train.memory import enable_gradient_checkpointing

    torch.manual_seed(0)
    torch.set_num_threads(2)
    options = SETTINGS[name]
    path = packaged_minilm_path()
    teacher = transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    config = transformers.AutoConfig.from_pretrained(path, num_labels=2, num_hidden_layers=3)
    student = transformers.AutoModelForSequenceClassification.from_config(config)
    student.load_state_dict(teacher.state_dict(), strict=False)
    for kept, source in enumerate((0, 2, 5)):
        student.bert.encoder.layer[kept].load_state_dict(teacher.bert.encoder.layer[source].state_dict())
    student.train()
    if options["checkpointing"]:
        enable_gradient_checkpointing(student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)
    ids = torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(1))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    labels = torch.randint(0, 2, (batch,))

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if options["bf16"] else contextlib.nullcontext()
        with autocast:
            with torch.no_grad():
                teacher_out = teacher(**inputs, output_hidden_states=True)
            out = student(**inputs, output_hidden_states=True)
            loss = kd_loss(out.logits.float(), teacher_out.logits.float(), temperature=2.0)
            loss = loss + torch.nn.functional.mse_loss(
                out.hidden_states[-1].float(), teacher_out.hidden_states[-1].float()
            )
            loss = loss + torch.nn.functional.cross_entropy(out.logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    before = _resident_bytes()  # models, inputs and optimizer built; no step taken yet
    sampler = PeakSampler()
    sampler.start()
    for _ in range(2):  # warm-up steps: not timed, but their memory counts (the allocator keeps it)
        step()
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    sampler.running = False
    sampler.join()
    return {"step_seconds": statistics.median(seconds), "peak_bytes_above_start": sampler.peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_setting(args.one, args.steps, args.batch, args.length)))
        return
    measured: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):  # interleaved: a slow moment of the machine hits every setting alike
        for name in SETTINGS:
            command = [sys.executable, "-m", "benchmarks.memory", "--one", name, "--steps", str(args.steps)]
            command += ["--batch", str(args.batch), "--length", str(args.length)]
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
            measured[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    rows = {}
    for name, runs in measured.items():
        rows[name] = {
            "step_seconds": statistics.median(run["step_seconds"] for run in runs),
            "peak_mib": statistics.median(run["peak_bytes_above_start"] for run in runs) / 2**20,
        }
    base = rows["fp32"]
    lines = ["| setting | step time | vs fp32 | peak memory above start | vs fp32 |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['step_seconds']:.2f} s | {row['step_seconds'] / base['step_seconds']:.2f}x | "
            f"{row['peak_mib']:.0f} MiB | {row['peak_mib'] / base['peak_mib']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    settings = {"steps": args.steps, "batch": args.batch, "length": args.length, "rounds": args.rounds}
    record = {"benchmark": "memory", "settings": settings, "rows": rows, "table": table}
    atomic_write_json(TARGET, {**record, "versions": library_versions(), "command": "python -m benchmarks.memory"})


if __name__ == "__main__":
    main()
