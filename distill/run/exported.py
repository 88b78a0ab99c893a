"""What ``distill predict`` and ``distill eval`` accept as a model: an exported folder, a run folder (its
distilled student), or one checkpoint of a transformer row (the tokenizer comes from its run).

:func:`servable_folder` turns each into a folder that ``transformers`` loads (exporting into a temporary
folder when needed); :func:`load_exported_model` loads an exported folder of either kind.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from distill.run.export_tensor import SPEC_FILE, load_exported


def _run_of(checkpoint: Path) -> Path | None:
    """The run folder (holding results.json) above a checkpoint folder, if any."""
    return next((parent for parent in checkpoint.parents if (parent / "results.json").is_file()), None)


@contextmanager
def servable_folder(path: str | Path) -> Iterator[Path]:
    """A Hugging Face folder (config, weights, tokenizer) for ``path``: itself when exported; the distilled
    student of a run folder, or a transformer row's checkpoint folder with its run's tokenizer, exported
    into a temporary folder removed on exit."""
    from distill.run.export import export_hf, export_row

    path = Path(path)
    if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        yield path
        return
    run = _run_of(path)
    checkpoint = (path / "config.json").is_file() and (path / "model.safetensors").is_file() and run is not None
    if not (path / "results.json").is_file() and not checkpoint:
        raise FileNotFoundError(
            f"{path} is not a model distill can serve: pass a folder written by `distill export`, a finished run "
            "folder (its distilled student), or a checkpoint folder of a transformer row inside a run folder"
        )
    with tempfile.TemporaryDirectory(prefix="distill-model-") as scratch:
        if (path / "results.json").is_file():
            export_row(path, scratch)
        else:
            export_hf(path / "model.safetensors", json.loads((run / "results.json").read_text()), Path(scratch))
        yield Path(scratch)


def load_exported_model(folder: Path) -> nn.Module | None:
    """The model of an exported folder (Hugging Face, a tensor model's distill_model.json, or either as
    ``model.onnx`` served by ONNX Runtime), else None."""
    described = (folder / SPEC_FILE).is_file()
    if not described and not ((folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()):
        return None
    if (folder / "model.onnx").is_file():  # distill export --format onnx, or a compress: export step
        from distill.compress.onnx_model import OnnxModel

        return OnnxModel(folder / "model.onnx")
    if described:
        return load_exported(folder)
    import transformers

    from distill.models.hf.loading import folder_head, head_class, quiet_loading

    head = folder_head(transformers.AutoConfig.from_pretrained(folder))
    with quiet_loading():
        return head_class(head).from_pretrained(folder, attn_implementation="eager").eval()
