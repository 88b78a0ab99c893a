"""ONNX artefacts: export a PyTorch model (the dynamo exporter, dynamic batch and sequence axes), serve
the file with ONNX Runtime behind the ``nn.Module`` interface the rest of distill calls, and check that
an artefact gives what the PyTorch model gave (parity) on held-out inputs."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.core.batch import Inputs, as_batch, call_model, logits_of, model_inputs
from distill.train.atomic import atomic_path


class ParityError(RuntimeError):
    """An artefact whose outputs depart from its PyTorch model's beyond the tolerance."""


class UnsupportedOpError(ValueError):
    """A model that ONNX (or ONNX Runtime) cannot express or run: int8 quantisation and ONNX export need it."""


def root_cause(error: BaseException) -> str:
    """The innermost exception of a chain as ``Type: first line`` (what an exporter's report boils down to)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()


class _LogitsOnly(nn.Module):
    """The model returning its logits alone (the ONNX graph's one output), called on one tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: Tensor) -> Tensor:
        return logits_of(self.model(inputs))


def export_onnx(model: nn.Module, sample: Inputs, path: Path) -> Path:
    """``model`` as one ONNX file at ``path`` (weights inside; its first output the logits), traced on
    ``sample`` with the batch axis (and, for token inputs, the sequence axis) dynamic. The exporter's
    chatter is kept quiet; a failure names its root cause (:class:`UnsupportedOpError`)."""
    model = model.eval()
    if isinstance(sample, Mapping):
        kwargs = model_inputs(model, sample)
        args: tuple = ()
        names = list(kwargs)
        axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
        dynamic: Any = {key: axes for key in kwargs}
        wrapped = model  # a Hugging Face model: its first output is the logits (no labels are passed)
    else:
        kwargs, args, names = {}, (sample,), ["inputs"]
        dynamic, wrapped = ({0: torch.export.Dim("batch")},), _LogitsOnly(model)
    log = io.StringIO()
    try:
        with atomic_path(path) as staging, contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapped,
                args,
                kwargs=kwargs,
                input_names=names,
                output_names=["logits"],
                dynamic_shapes=dynamic,
                dynamo=True,
                external_data=False,
            )
            program.save(str(staging), external_data=False)
    except Exception as error:
        raise UnsupportedOpError(
            f"{type(model).__name__} cannot be written as ONNX, which int8 quantisation and ONNX export run on "
            f"({root_cause(error)}); replace that operation in the model, or end the compress list before "
            "quantize/export and serve the PyTorch model"
        ) from None
    return path


class OnnxModel(nn.Module):
    """An ONNX file run by ONNX Runtime on the CPU, called like the PyTorch model it came from (tensor
    inputs, or keyword inputs of which it takes those the graph has); returns the logits as a tensor."""

    def __init__(self, path: str | Path, what: str = "ONNX") -> None:
        super().__init__()
        import onnxruntime

        self.path, self.what = Path(path), what
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads PyTorch is timed with
        # idle workers would spin for a while after each run, taking the cores from whatever runs next (another
        # model timed in the same round): with spinning off, interleaved timings stay fair
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # e.g. NOT_IMPLEMENTED: no CPU kernel for an (int8) operator of the graph
            raise UnsupportedOpError(
                f"ONNX Runtime cannot run {self.path} ({root_cause(error)}); an operator of the graph has no CPU "
                "kernel for its types: try the other quantize mode (int8_static / int8_dynamic) or export in float"
            ) from None
        self.input_names = [node.name for node in self.session.get_inputs()]

    def extra_repr(self) -> str:
        return str(self.path)

    def describe(self) -> str:
        return f"an {self.what} file ({self.path.name})"

    def forward(self, *args: Tensor, **kwargs: Tensor) -> Tensor:
        if args:
            feeds = {self.input_names[0]: args[0].detach().cpu().numpy()}
        else:
            feeds = {k: v.detach().cpu().numpy() for k, v in kwargs.items() if k in self.input_names}
            missing = [name for name in self.input_names if name not in feeds]
            if missing and "input_ids" in feeds:  # what a tokenizer leaves out: no padding, one segment
                ids = feeds["input_ids"]
                defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                feeds.update({name: defaults[name] for name in missing if name in defaults})
            missing = [name for name in self.input_names if name not in feeds]
            if missing:
                raise ValueError(f"{self.path.name} needs the inputs {missing}; the batch has {sorted(kwargs)}")
        return torch.from_numpy(self.session.run(None, feeds)[0])

    def _initializers(self) -> list[np.ndarray]:
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(str(self.path)).graph
        return [numpy_helper.to_array(tensor) for tensor in graph.initializer]

    def deployed_parameters(self) -> int:
        """Entries of the graph's weight tensors (quantised weights count once; their scales too)."""
        return sum(int(array.size) for array in self._initializers() if array.size > 1)

    def nonzero_parameters(self) -> int:
        return sum(int(np.count_nonzero(array)) for array in self._initializers() if array.size > 1)


def held_out_inputs(task: Any, count: int = 256, batch_size: int = 64) -> list[Inputs]:
    """Input batches of the first ``count`` examples of the task's evaluation split (never trained on)."""
    _, dataset = task.eval_split()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=getattr(task, "collate", None))
    batches, seen = [], 0
    for raw in loader:
        batches.append(as_batch(raw).inputs)
        seen += batch_size
        if seen >= count:
            break
    return batches


@torch.inference_mode()
def parity(
    reference: nn.Module,
    served: nn.Module,
    batches: Sequence[Inputs],
    max_abs: float | None = 1e-3,
    min_agreement: float = 0.99,
    what: str = "the artefact",
) -> dict[str, float]:
    """Max |logit difference| and argmax agreement of ``served`` against ``reference`` over ``batches``
    (padding positions of token outputs left out); :class:`ParityError` beyond ``max_abs`` (None: not
    checked, for quantised artefacts) or below ``min_agreement``."""
    reference.eval()
    worst, agree, total = 0.0, 0, 0
    for inputs in batches:
        expected = logits_of(call_model(reference, inputs)).float()
        got = logits_of(call_model(served, inputs)).float()
        mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
        if expected.dim() == 3 and mask is not None:  # (B, L, C) per token: only real tokens
            keep = mask.bool()
            expected, got = expected[keep], got[keep]
        worst = max(worst, float((expected - got).abs().max()))
        agree += int((expected.argmax(-1) == got.argmax(-1)).sum())
        total += expected.shape[0]
    result = {"max_abs_diff": worst, "agreement": agree / max(total, 1), "compared": total}
    if (max_abs is not None and worst > max_abs) or result["agreement"] < min_agreement:
        raise ParityError(
            f"{what} departs from its PyTorch model on {total} held-out inputs: max |logit difference| "
            f"{worst:.3g} (allowed {max_abs}), argmax agreement {result['agreement']:.4f} (needed {min_agreement}); "
            "the export is wrong, or the step's tolerance (max_abs, min_agreement) is too tight for this compression"
        )
    return result
