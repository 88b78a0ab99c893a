"""`distill export --format hf|onnx|safetensors` on a run folder: ONNX checked for parity and served by
ONNX Runtime with the run's score, wrong formats refused, compressed rows exported as their artefact."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from distill.cli import app
from distill.compress.base import CompressState
from distill.compress.onnx_model import OnnxModel, UnsupportedOpError
from distill.compress.quantize import Quantize
from distill.run.export import export_row
from distill.run.exported import load_exported_model
from distill.run.predict import predict
from distill.run.recipe import validate_recipe
from distill.run.results import find_row
from distill.run.runner import make_context, run_recipe
from distill.tasks.registry import load_task
from tests.test_compress import _recipe
from tests.test_compress_text import ROWS, _text_recipe


@pytest.fixture(scope="module")
def tensor_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tensor")
    raw = _recipe([{"prune": {"amount": 0.5}}, {"export": {"format": "onnx"}}])
    recipe = validate_recipe(raw)
    return folder / "run", recipe, run_recipe(recipe, raw, folder / "run", show_progress=False)


def test_a_tensor_row_as_onnx_serves_the_reported_score(tensor_run, tmp_path):
    run, recipe, results = tensor_run
    result = CliRunner().invoke(app, ["export", str(run), "--out", str(tmp_path / "onnx"), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "as onnx" in output and "argmax agreement 1.0000" in output
    assert {p.name for p in (tmp_path / "onnx").iterdir()} == {"model.onnx", "distill_model.json"}
    served = load_exported_model(tmp_path / "onnx")
    assert isinstance(served, OnnxModel)
    assert load_task(recipe).score(served) == pytest.approx(find_row(results, "distilled")["score"]["mean"])


def test_formats_that_do_not_fit_are_refused(tensor_run, tmp_path):
    run, _, _ = tensor_run
    with pytest.raises(ValueError, match=r"--format hf: this run's model is a tensor model.*use safetensors or onnx"):
        export_row(run, tmp_path / "a", format="hf")
    with pytest.raises(ValueError, match=r"--format 'tflite': the formats are hf, onnx, safetensors"):
        export_row(run, tmp_path / "b", format="tflite")
    result = CliRunner().invoke(
        app, ["export", str(run), "--out", str(tmp_path / "c"), "--row", "prune 50% global (magnitude)"]
    )
    assert result.exit_code != 0
    output = " ".join(result.output.split())
    assert "is a compression step's PyTorch weights" in output and "{export: {format: onnx}}" in output


def test_a_compressed_row_exports_as_its_artefact(tensor_run, tmp_path):
    run, recipe, results = tensor_run
    done = export_row(run, tmp_path / "served", row="export onnx")
    assert done.format == "onnx" and done.model is None
    model = OnnxModel(tmp_path / "served" / "model.onnx")  # a tensor model's export step writes the file alone
    assert load_task(recipe).score(model) == pytest.approx(results["rows"][-1]["score"]["mean"])
    with pytest.raises(ValueError, match=r"was exported as onnx by its compress step; pass --format onnx"):
        export_row(run, tmp_path / "other", row="export onnx", format="hf")


def test_a_text_row_as_onnx_predicts_like_the_hf_export(tmp_path):
    raw = _text_recipe(tmp_path, [], epochs=6, lr=1e-2)
    run_recipe(validate_recipe(raw), raw, tmp_path / "run", show_progress=False)
    hf = export_row(tmp_path / "run", tmp_path / "hf")
    done = export_row(tmp_path / "run", tmp_path / "onnx", format="onnx")
    assert hf.format == "hf" and done.parity["max_abs_diff"] < 1e-3 and done.parity["agreement"] == 1.0
    assert {"model.onnx", "config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "onnx").iterdir()}
    assert not (tmp_path / "onnx" / "model.safetensors").exists()
    texts = [text for text, _ in ROWS]
    onnx_answers, hf_answers = list(predict(tmp_path / "onnx", texts)), list(predict(tmp_path / "hf", texts))
    assert [a["label"] for a in onnx_answers] == [a["label"] for a in hf_answers]
    for a, b in zip(onnx_answers, hf_answers, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-4)


class _WithHistogram(nn.Module):
    """A digits classifier with an operation ONNX cannot express (histc over a data-dependent range)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        logits = self.fc(inputs.flatten(1))
        return logits + 0 * torch.histc(logits, bins=4).sum()


def test_quantising_a_model_with_an_unsupported_op_says_which_and_what_to_do(tensor_run, tmp_path):
    _, recipe, _ = tensor_run
    context = make_context(recipe, _recipe([]), tmp_path / "run", show_progress=False)
    state = CompressState(context, 0, _WithHistogram(), tmp_path / "compress", context.task)
    with pytest.raises(UnsupportedOpError) as caught:
        Quantize().apply(state, 1)
    message = str(caught.value)
    assert "_WithHistogram cannot be written as ONNX" in message and "histc" in message
    assert "end the compress list before quantize/export" in message and "\n" not in message
    assert state.artefact is None and not list((tmp_path / "compress").rglob("*.onnx"))  # nothing half-written


def test_an_onnx_file_runtime_cannot_load_is_named(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"not a graph")
    with pytest.raises(UnsupportedOpError, match=r"ONNX Runtime cannot run .*broken.onnx \("):
        OnnxModel(tmp_path / "broken.onnx")
