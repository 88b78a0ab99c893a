"""Record what named submodules see or produce during a forward pass, using forward hooks.

Feature distillation needs intermediate tensors (``block2.conv``'s output, ``fc1``'s input) without
rewriting the model's ``forward``. :class:`Capture` hooks the named modules for the duration of a
``with`` block and always removes every hook afterwards, so a model is never left instrumented::

    with Capture(model, ["fc1", "block2.conv"]) as cap:
        logits = model(x)
    cap["fc1"]  # the tensor fc1 returned
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from typing import Any, Literal

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from distill.names import unknown_name_message

# Beyond this many valid names the one-line list becomes unreadable; it is wrapped instead.
_WRAP_ABOVE = 40


class _ReadableKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


class UnknownModuleError(_ReadableKeyError):
    """Raised for a module name the model does not have; the message lists the valid dotted names."""


class ModuleNotCalledError(_ReadableKeyError):
    """Raised when reading a record of a hooked module that did not run during the forward pass."""


def module_names(model: nn.Module) -> list[str]:
    """Dotted names of all submodules of ``model`` (the root, named ``""``, is excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name``; an unknown name lists the valid ones and the closest match."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        pass
    known = module_names(model)
    message = unknown_name_message("module", name, known)
    if len(known) > _WRAP_ABOVE:
        # Large models have hundreds of names: keep all of them (the user needs the exact spelling),
        # but wrap so that the message stays readable in a terminal.
        message = textwrap.fill(message, width=100, subsequent_indent="    ", break_on_hyphens=False)
    raise UnknownModuleError(message)


def _split_call_suffix(key: str) -> str:
    """``'fc#2'`` -> ``'fc'``: records of repeated calls carry a ``#k`` suffix."""
    base, sep, index = key.rpartition("#")
    return base if sep and index.isdigit() else key


class Capture:
    """Record the output (or input) of named submodules of ``model`` while hooks are attached.

    ``what="output"`` records what the module returned; a module returning a tuple or list (an LSTM,
    a Hugging Face layer returning ``(hidden, attention, ...)``) is recorded as element 0, which by
    convention is the hidden state. ``what="input"`` records the first positional argument of the
    module's ``forward`` (the first keyword argument when it was called with keywords only).

    A module called more than once per forward (weight sharing, a recurrent cell) is recorded once
    per call: the first call under ``"name"``, later ones under ``"name#1"``, ``"name#2"``, ... Call
    :meth:`clear` between forward passes when reusing one attached Capture across batches;
    otherwise the second batch's records would be numbered as repeated calls.

    ``detach=True`` stores detached tensors (for a frozen teacher); with ``detach=False`` the
    records stay in the autograd graph so losses on them train the model.

    Use as a context manager, or call :meth:`attach` and :meth:`remove` yourself.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Iterable[str],
        what: Literal["input", "output"] = "output",
        detach: bool = False,
    ) -> None:
        if what not in ("input", "output"):
            raise ValueError(f"what must be 'input' or 'output', got {what!r}")
        self.model = model
        self.names: list[str] = list(dict.fromkeys(names))  # de-duplicated, order kept
        self.what = what
        self.detach = detach
        # Resolve every name now, before any hook exists: a typo fails cleanly with nothing to undo.
        self._modules = {name: resolve_module(model, name) for name in self.names}
        self.records: dict[str, Any] = {}
        self._calls: dict[str, int] = {}
        self._handles: list[RemovableHandle] = []

    # ------------------------------------------------------------------ hooks

    def _make_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self.what == "output":
                value = output[0] if isinstance(output, tuple | list) and output else output
            elif args:
                value = args[0]
            else:
                value = next(iter(kwargs.values()), None)
            if self.detach and isinstance(value, Tensor):
                value = value.detach()
            count = self._calls.get(name, 0)
            self._calls[name] = count + 1
            self.records[name if count == 0 else f"{name}#{count}"] = value

        return hook

    def attach(self) -> Capture:
        """Register the hooks (records start empty); returns ``self``."""
        if self._handles:
            raise RuntimeError("Capture is already attached; call remove() before attaching again")
        self.clear()
        try:
            for name, module in self._modules.items():
                # with_kwargs so that inputs passed by keyword are still seen.
                self._handles.append(module.register_forward_hook(self._make_hook(name), with_kwargs=True))
        except BaseException:
            self.remove()  # never leave a partial set of hooks behind
            raise
        return self

    def remove(self) -> None:
        """Remove every hook this Capture registered; the records are kept. Safe to call twice."""
        while self._handles:
            self._handles.pop().remove()

    @property
    def attached(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    def clear(self) -> None:
        """Forget all records and call counts (to reuse an attached Capture for the next batch)."""
        self.records.clear()
        self._calls.clear()

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Capture:
        return self.attach()

    def __exit__(self, *exc_info: object) -> None:
        self.remove()  # also on exception: the model must not keep recording

    # ------------------------------------------------------------------ reading records

    def __getitem__(self, key: str) -> Any:
        if key in self.records:
            return self.records[key]
        base = _split_call_suffix(key)
        if base not in self._modules:
            raise UnknownModuleError(unknown_name_message("captured module", key, self.names))
        if base == key:
            raise ModuleNotCalledError(f"module {key!r} was not called during the forward pass")
        calls = self._calls.get(base, 0)
        raise ModuleNotCalledError(
            f"module {base!r} was called {calls} time(s) during the forward pass, so there is no record {key!r}"
        )

    def __contains__(self, key: object) -> bool:
        return key in self.records

    def __repr__(self) -> str:
        state = "attached" if self.attached else "detached"
        return f"Capture({self.names}, what={self.what!r}, detach={self.detach}, {state}, records={list(self.records)})"
