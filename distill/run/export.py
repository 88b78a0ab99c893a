"""A trained row of a run as a Hugging Face folder that plain ``transformers`` loads (text runs; tensor
runs: :mod:`distill.run.export_tensor`).

During a run, every row whose model carries a Hugging Face config gets that ``config.json`` beside its
weights (:func:`write_model_configs`, with the real layer count and ``id2label``). ``distill export``
(:func:`export_row`) rebuilds the model from it, loads the row's weights (safetensors, strict: nothing
of connectors or method modules is part of them) and writes ``save_pretrained`` output plus the
tokenizer the run encoded the data with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from distill.run.results import find_row
from distill.strategies.rows import Row
from distill.train.atomic import atomic_write_text
from distill.train.checkpoint import load_module_weights


def write_model_configs(rows: Sequence[Row]) -> None:
    """``config.json`` beside each row's weights file, for the rows whose model has a Hugging Face config."""
    for row in rows:
        config = getattr(row.model, "config", None)
        if row.weights is not None and hasattr(config, "to_json_string"):
            atomic_write_text(Path(row.weights).parent / "config.json", config.to_json_string())


def _row_entry(results: dict[str, Any], row: str, seed: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row named by its role (``distilled``) or its label (``peer 0 mutual``), and its seed entry."""
    found = next((r for r in results["rows"] if r["label"] == row), None) or find_row(results, row)
    seeds = found["seeds"]
    entry = seeds[0] if seed is None else next((s for s in seeds if s["seed"] == seed), None)
    if entry is None:
        raise ValueError(f"row {row!r} has no seed {seed}; its seeds are {[s['seed'] for s in seeds]}")
    if "weights" not in entry:
        raise ValueError(f"row {row!r} seed {entry['seed']} kept no weights file (it was not trained alone)")
    return found, entry


def _weights_path(run_dir: Path, recorded: str) -> Path:
    """The weights file as recorded, or the same path inside ``run_dir`` when the run folder was moved."""
    path = Path(recorded)
    if path.is_file():
        return path
    parts = path.parts
    for start in range(len(parts)):
        candidate = run_dir.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{recorded} (the row's weights) is not in {run_dir}")


FORMATS = ("hf", "onnx", "safetensors")


@dataclass
class Exported:
    """What ``distill export`` wrote: the folder, the PyTorch model (None for a copied compressed
    artefact), the format, and for ONNX the parity report against the PyTorch model."""

    folder: Path
    model: nn.Module | None
    format: str
    parity: dict[str, float] = field(default_factory=dict)


def export_row(
    run_dir: str | Path,
    out: str | Path,
    row: str = "distilled",
    seed: int | None = None,
    format: str | None = None,
    data_dir: str | None = None,
) -> Exported:
    """Write the model of ``row`` (default: the distilled student of the first seed) to ``out`` as
    ``format``: ``hf`` (a text run's default), a Hugging Face folder; ``safetensors`` (a tensor run's
    default), ``model.safetensors`` + ``distill_model.json`` (:mod:`distill.run.export_tensor`; for a
    transformer the Hugging Face folder is its safetensors form); ``onnx``, ``model.onnx`` checked for
    parity on the run's held-out data (found through ``data_dir`` when it moved;
    :mod:`distill.run.export_formats`). A compressed row's artefact folder is copied as it is."""
    run_dir, out = Path(run_dir), Path(out)
    if format is not None and format not in FORMATS:
        raise ValueError(f"--format {format!r}: the formats are {', '.join(FORMATS)}")
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no results.json: export needs a finished run folder")
    results = json.loads(results_path.read_text())
    found, entry = _row_entry(results, row, seed)
    weights = _weights_path(run_dir, entry["weights"])
    if found["role"] == "compressed":
        from distill.run.export_formats import copy_compressed

        return Exported(out, None, copy_compressed(found, weights, out, format))
    tensor = "head" not in results
    if tensor and format == "hf":
        raise ValueError("--format hf: this run's model is a tensor model, not a transformer; use safetensors or onnx")
    if tensor:
        from distill.run.export_tensor import export_tensor_row

        model = export_tensor_row(run_dir, out, results, found, entry, weights)
    elif "tokenizer" not in results:
        raise ValueError(f"{run_dir}/results.json names no tokenizer: run the recipe again to export it")
    else:
        model = export_hf(weights, results, out)
    if format == "onnx":
        from distill.run.export_formats import write_onnx

        return Exported(out, model, "onnx", write_onnx(run_dir, model, out, data_dir))
    return Exported(out, model, "safetensors" if tensor else "hf")


def export_hf(weights: Path, results: dict[str, Any], out: Path) -> nn.Module:
    """The transformer whose ``config.json`` lies beside ``weights`` as a Hugging Face folder ``out``, with
    the tokenizer the run (``results``) encoded its data with."""
    if not (weights.parent / "config.json").is_file():
        raise FileNotFoundError(f"{weights.parent}/config.json is missing: this row's model is not a transformer")
    import transformers

    from distill.models.hf.loading import head_class, quiet_loading

    causal = results["head"] == "causal_lm"  # a language model: its tokenizer may come from a GGUF file
    with quiet_loading():
        config = transformers.AutoConfig.from_pretrained(weights.parent)
        model_class = transformers.AutoModelForCausalLM if causal else head_class(results["head"])
        model = model_class.from_config(config)
        load_module_weights(model, weights)
        model.save_pretrained(out)
        reader = tokenizer_of if causal else transformers.AutoTokenizer.from_pretrained
        tokenizer = reader(results["tokenizer"])
        tokenizer.save_pretrained(out)
    return model


def tokenizer_of(path: str):
    """A causal LM's tokenizer: from its folder, its GGUF file or the packaged ``smollm2``."""
    from distill.lm.models import load_tokenizer

    return load_tokenizer(path)
