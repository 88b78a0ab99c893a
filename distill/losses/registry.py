"""Loss registry: recipes refer to losses by short name (``loss: kd``).

Providers register with :func:`register` when their module is imported. The built-in providers are
named in :data:`_BUILTIN_PROVIDERS` as module *strings* and imported on the first lookup (the
entry-point pattern), so that ``distill.losses`` never imports a layer above it: the methods with
trainable parts live in ``distill.methods``, which itself imports ``distill.core`` and this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from distill.names import unknown_name_message

LossFn = TypeVar("LossFn", bound=Callable)

_REGISTRY: dict[str, Callable] = {}
_INFO: dict[str, LossInfo] = {}

Stage = Literal["main", "pretrain", "both"]
# What a method transfers: the output distribution, intermediate features, relations between
# examples, or a contrastive objective over them. The catalog groups its table in this order.
Knowledge = Literal["response", "feature", "relation", "contrastive"]

# Modules whose import registers the built-in losses, loaded on the first lookup. Strings, not
# imports: ``distill.methods`` sits above ``distill.losses`` in the layering.
_BUILTIN_PROVIDERS: tuple[str, ...] = (
    "distill.losses.response",
    "distill.losses.multilabel",
    "distill.losses.dkd_dist",
    "distill.losses.feature",
    "distill.losses.feature_maps",
    "distill.losses.relation",
    "distill.losses.attention",
    "distill.losses.transformer",
    "distill.losses.lm",
    "distill.losses.uld",
    "distill.methods",
)
_providers_loaded = False  # all providers imported
_providers_loading = False  # set before importing them: a lookup during that import must not recurse


@dataclass(frozen=True)
class LossInfo:
    """How the Distiller calls a registered loss, and how the method catalog describes it.

    * ``layer_lists``: the loss takes *lists* of feature tensors (all layers of a match at once,
      e.g. FSP's Gram matrices between consecutive layers) instead of one student/teacher pair.
    * ``stage``: when its term is trained by default. ``pretrain`` terms are optimised alone in a
      stage before distillation (RepDistiller's init stage for AB and FSP), ``both`` in that stage
      and in distillation, ``main`` only in distillation. A recipe may override it per match.
    * ``pretrain_epochs``: the default length of that stage.

    Catalog metadata (empty for helpers; :mod:`distill.report.catalog` lists the losses with a
    ``title`` and a ``paper``), kept here so a loss and its documentation are declared in one place:

    * ``title``, ``paper``: the method's name and its citation, e.g. ``"Decoupled KD"``,
      ``"Zhao et al. CVPR 2022"``.
    * ``knowledge``: what it transfers (:data:`Knowledge`).
    * ``inputs``: what it reads, e.g. ``"logits + labels"``.
    * ``recipe``: one example line of YAML under ``distill:`` that uses it.
    * ``order``: its place within its knowledge group in the catalog (see
      :func:`distill.report.catalog.catalog` for why an explicit order).
    """

    layer_lists: bool = False
    stage: Stage = "main"
    pretrain_epochs: int = 0
    title: str = ""
    paper: str = ""
    knowledge: Knowledge | None = None
    inputs: str = ""
    recipe: str = ""
    order: int | None = None


class UnknownLossError(KeyError):
    """Raised for a loss name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0])


def register(
    name: str,
    *,
    layer_lists: bool = False,
    stage: Stage = "main",
    pretrain_epochs: int = 0,
    title: str = "",
    paper: str = "",
    knowledge: Knowledge | None = None,
    inputs: str = "",
    recipe: str = "",
    order: int | None = None,
) -> Callable[[LossFn], LossFn]:
    """Register a loss function (or :class:`~distill.core.method.MethodLoss` class) under ``name``.

    Returns it unchanged; the keyword arguments become its :class:`LossInfo`. An unknown
    ``knowledge`` raises here, at import, rather than as a gap in the catalog later. Registering the
    same object again is a no-op that keeps its first metadata; with different metadata it raises.
    """
    if knowledge is not None and knowledge not in get_args(Knowledge):
        raise ValueError(f"loss {name!r}: knowledge must be one of {get_args(Knowledge)}, not {knowledge!r}")
    loss_info = LossInfo(
        layer_lists=layer_lists,
        stage=stage,
        pretrain_epochs=pretrain_epochs,
        title=title,
        paper=paper,
        knowledge=knowledge,
        inputs=inputs,
        recipe=recipe,
        order=order,
    )

    def decorator(fn: LossFn) -> LossFn:
        if name in _REGISTRY:
            if _REGISTRY[name] is not fn:
                raise ValueError(f"loss name {name!r} is already registered to {_REGISTRY[name].__qualname__}")
            # The same object again: harmless, and a bare re-registration must not wipe its metadata.
            if loss_info not in (LossInfo(), _INFO[name]):
                raise ValueError(f"loss name {name!r} is already registered with other metadata; unregister it first")
            return fn
        _REGISTRY[name] = fn
        _INFO[name] = loss_info
        return fn

    return decorator


def unregister(name: str) -> None:
    """Remove ``name`` from the registry, for a test or plugin that registers a loss only for a while.

    An unknown name raises :class:`UnknownLossError`, like a lookup.
    """
    get(name)
    del _REGISTRY[name]
    del _INFO[name]


def _load_providers() -> None:
    """Import the built-in provider modules once, so their ``@register`` calls have run.

    ``_providers_loading`` is set *before* importing: ``distill.methods`` imports this registry (and
    may, through ``distill.core``, look a loss up) while it is being loaded; such a nested call sees
    the flag and returns at once with what is registered so far instead of importing again. A failed
    import leaves the providers unloaded, so the next lookup retries and shows the same error instead of
    a misleading unknown name. (Python's import lock already serialises imports across threads.)
    """
    global _providers_loaded, _providers_loading
    if _providers_loaded or _providers_loading:
        return
    _providers_loading = True
    try:
        for module in _BUILTIN_PROVIDERS:
            importlib.import_module(module)
        _providers_loaded = True
    finally:
        _providers_loading = False


def names() -> list[str]:
    """All registered loss names, sorted."""
    _load_providers()
    return sorted(_REGISTRY)


def get(name: str) -> Callable:
    """Return the loss registered as ``name``; an unknown name lists the known ones."""
    _load_providers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownLossError(unknown_name_message("loss", name, names())) from None


def info(name: str) -> LossInfo:
    """How the loss registered as ``name`` is called and described (see :class:`LossInfo`)."""
    get(name)  # an unknown name raises with the known names
    return _INFO[name]
