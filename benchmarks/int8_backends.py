"""Which int8 backend is fastest on this CPU: the measurement behind the quantize step's choice of
ONNX Runtime, side by side in one run.

    python -m benchmarks.int8_backends [--layers 12] [--batch 8] [--length 128] [--budget 120]

A BERT-base shape (hidden 768, 12 heads, FFN 3072, ``--layers`` layers; random weights: speed does not
depend on them) classifying ``--batch`` x ``--length`` tokens, timed as:

- PyTorch fp32, eager (the reference);
- ``torch.ao.quantization.quantize_dynamic`` on every Linear (int8; deprecated in torch 2.13);
- torchao's int8 dynamic activations + int8 weights, in eager mode and under ``torch.compile`` (only
  when ``torchao`` is installed; it is not a dependency of distill; compiling needs a C++ compiler and
  about a minute, spent in the untimed warm-up);
- ONNX Runtime fp32 (the dynamo exporter's file);
- ONNX Runtime int8 dynamic, per-channel weights, 7-bit (the quantize step's default) and 8-bit.

Every model is timed interleaved round by round (distill.run.latency: the order rotates, so a busy
spell slows all alike) with the same thread count; speed-up is the median over rounds of the paired
ratio fp32 eager / model. Writes benchmarks/results/int8_backends.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
import transformers
from torch import nn

from benchmarks.int8_range import cpu_flags
from benchmarks.nlp_common import RESULTS
from distill.compress.onnx_model import OnnxModel, export_onnx
from distill.run.latency import interleaved_samples, paired_speedup, quartile_spread
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions


def bert_base(layers: int) -> nn.Module:
    torch.manual_seed(0)
    config = transformers.BertConfig(num_hidden_layers=layers, num_labels=2, attn_implementation="eager")
    return transformers.BertForSequenceClassification(config).eval()


def torch_ao_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def torchao_dynamic(model: nn.Module) -> nn.Module | None:
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        return None
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return model


def onnx_models(model: nn.Module, probe: dict, folder: Path) -> dict[str, nn.Module]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = export_onnx(model, probe, folder / "fp32.onnx")
    found = {"ONNX Runtime fp32": OnnxModel(float_path)}
    quiet = logging.getLogger()
    level, quiet.level = quiet.level, logging.ERROR
    try:
        for reduce_range, name in ((True, "7-bit weights, the default"), (False, "8-bit weights")):
            target = folder / f"int8-{reduce_range}.onnx"
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_dynamic(
                    str(float_path),
                    str(target),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=reduce_range,
                )
            found[f"ONNX Runtime int8 dynamic ({name})"] = OnnxModel(target)
    finally:
        quiet.level = level
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of timing rounds at most")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.length), generator=generator)
    probe = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    models: dict[str, nn.Module] = {"PyTorch fp32 (eager)": bert_base(args.layers)}
    models["torch.ao quantize_dynamic int8"] = torch_ao_dynamic(bert_base(args.layers))
    torchao = torchao_dynamic(bert_base(args.layers))
    if torchao is not None:
        models["torchao int8 dynamic (eager)"] = torchao
        models["torchao int8 dynamic (torch.compile)"] = torch.compile(torchao_dynamic(bert_base(args.layers)))
    with tempfile.TemporaryDirectory() as scratch:
        models.update(onnx_models(models["PyTorch fp32 (eager)"], probe, Path(scratch)))
        samples = interleaved_samples(list(models.values()), probe, min_rounds=10, budget_s=args.budget)
    reference = samples[0]
    rows = {
        name: {
            "median_ms": 1000 * statistics.median(times),
            "spread": quartile_spread(times),
            "speedup_vs_fp32_eager": paired_speedup(reference, times),
        }
        for name, times in zip(models, samples, strict=True)
    }
    lines = ["| backend | ms per batch | spread (IQR / median) | speed-up vs fp32 eager |", "|---|---|---|---|"]
    lines += [
        f"| {name} | {row['median_ms']:.1f} | {100 * row['spread']:.1f}% | {row['speedup_vs_fp32_eager']:.2f}x |"
        for name, row in rows.items()
    ]
    results = {
        "benchmark": "int8_backends",
        "settings": vars(args) | {"threads": torch.get_num_threads(), "rounds": len(reference)},
        "cpu_flags": cpu_flags(),
        "torchao": "installed" if torchao is not None else "not installed (pip install torchao to add its row)",
        "rows": rows,
        "table": "\n".join(lines),
        "versions": library_versions(),
    }
    print(
        f"BERT-base shape, {args.layers} layers, batch {args.batch} x {args.length}, {torch.get_num_threads()} threads"
    )
    print(results["table"])
    if torchao is None:
        print("torchao is not installed: its row is missing (pip install torchao)")
    atomic_write_json(RESULTS / "int8_backends.json", results)


if __name__ == "__main__":
    main()
