"""Why the quantize and qat steps use 7-bit weights by default: ONNX Runtime int8 dynamic quantisation
with full-range (8-bit) against reduced-range (7-bit) weights, on this CPU.

    python -m benchmarks.int8_range

On x86 CPUs without VNNI, ONNX Runtime's uint8 x int8 kernels add pairs of products in int16, which
saturate when activations and weights are both near full range. For each model the script exports the
float model to ONNX, quantises it both ways (per output channel, as the quantize step) and reports on
held-out inputs the largest |logit difference| from the float model, argmax agreement with it, and the
largest difference from the int8 computation simulated in PyTorch (distill.compress.qat's fake
quantisers: the int8 model ONNX Runtime should compute). Models: a random 12-32-5 MLP on Gaussian
inputs (tests/test_compress_qat.py's), and a 64-256-256-10 MLP trained for 30 epochs on scikit-learn's
digits (its 360 test images). Writes benchmarks/results/int8_range.json. Takes seconds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from sklearn.datasets import load_digits
from torch import nn

from benchmarks.nlp_common import RESULTS
from distill.compress.onnx_model import export_onnx
from distill.compress.qat import finish_fake_quant, start_fake_quant
from distill.train.atomic import atomic_write_json
from distill.train.checkpoint import library_versions


def random_mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 5)).eval(), torch.randn(16, 12)


def digits_mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    images, labels = load_digits(return_X_y=True)
    x, y = torch.tensor(images / 16, dtype=torch.float32), torch.tensor(labels)
    order = torch.randperm(len(x))
    train, test = order[360:], order[:360]
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        for batch in train.split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval(), x[test]


def simulated(model: nn.Module, inputs: torch.Tensor, levels: int) -> np.ndarray:
    """The int8 computation in PyTorch: weights on the grid of ``levels``, inputs as DynamicQuantizeLinear."""
    state = {name: value.clone() for name, value in model.state_dict().items()}
    start_fake_quant(model, per_channel=True, activations=True, levels=levels)
    with torch.no_grad():
        out = model(inputs).numpy()
    finish_fake_quant(model)
    model.load_state_dict(state)
    return out


def measure(model: nn.Module, inputs: torch.Tensor, folder: Path) -> dict[str, dict[str, float]]:
    float_path = export_onnx(model, inputs, folder / "float.onnx")
    with torch.no_grad():
        reference = model(inputs).numpy()
    found = {}
    for reduce_range, levels in ((False, 127), (True, 64)):
        target = folder / f"int8-{reduce_range}.onnx"
        quantize_dynamic(
            str(float_path), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range
        )
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        served = session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]
        found["7-bit weights" if reduce_range else "8-bit weights"] = {
            "max_abs_vs_float": float(np.abs(served - reference).max()),
            "argmax_agreement": float((served.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_vs_simulated_int8": float(np.abs(served - simulated(model, inputs, levels)).max()),
        }
    return found


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted({flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {flag}" in text})


def main() -> None:
    results = {"benchmark": "int8_range", "cpu_flags": cpu_flags(), "models": {}, "versions": library_versions()}
    lines = [
        "| model | weights | max abs logit diff vs float | argmax agreement | max abs diff vs simulated int8 |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for name, build in (("random MLP 12-32-5", random_mlp), ("digits MLP 64-256-256-10", digits_mlp)):
            folder = Path(scratch) / name.split()[0]
            folder.mkdir()
            model, inputs = build()
            found = results["models"][name] = measure(model, inputs, folder)
            for weights, row in found.items():
                lines.append(
                    f"| {name} | {weights} | {row['max_abs_vs_float']:.4f} | {row['argmax_agreement']:.3f} | "
                    f"{row['max_abs_vs_simulated_int8']:.2e} |"
                )
    results["table"] = "\n".join(lines)
    print(f"CPU flags: {', '.join(results['cpu_flags']) or 'unknown'}\n")
    print(results["table"])
    atomic_write_json(RESULTS / "int8_range.json", results)


if __name__ == "__main__":
    main()
