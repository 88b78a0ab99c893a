"""The method zoo at a glance: what each method transfers, what it needs, and how a recipe asks for it.

The catalog is *derived* from the loss registry: each method declares its title, paper, knowledge
type, inputs and example recipe line in its own ``@register(...)`` call (:class:`~distill.losses.LossInfo`),
so a new method documents itself where it is defined and nobody keeps a second list in step. The
README's method table is :func:`markdown_table` (regenerate it with ``python -m distill.report.catalog``;
a test fails while the README differs), and ``benchmarks/methods.py`` reads titles and knowledge types
from here, keeping only its benchmark settings (weights, layer roles) to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from distill.losses import registry
from distill.losses.registry import Knowledge

KNOWLEDGE_ORDER: tuple[str, ...] = get_args(Knowledge)  # response, feature, relation, contrastive


@dataclass(frozen=True)
class Entry:
    """One catalogued method: a registered loss that carries a title and a paper."""

    name: str  # the registered loss name
    title: str
    paper: str
    knowledge: Knowledge | None
    inputs: str
    recipe: str  # one line of YAML under `distill:`


def _sort_key(name: str, info: registry.LossInfo) -> tuple:
    """Knowledge group first, then the method's declared ``order``, then (for ties or no order) its name."""
    group = KNOWLEDGE_ORDER.index(info.knowledge) if info.knowledge in KNOWLEDGE_ORDER else len(KNOWLEDGE_ORDER)
    return (group, info.order is None, info.order or 0, name)


def catalog() -> list[Entry]:
    """Every registered loss with a ``title`` and a ``paper``, grouped by knowledge type.

    Within a group the order is the ``order`` each method declares at registration, not the name:
    the table reads as the field grew, the classic method before its refinements (Hinton's ``kd``
    before ``dkd`` and ``dist``, which alphabetical order would put first) and the two RKD terms in the
    paper's order. A method without an ``order`` comes after the ordered ones of its group, by name,
    so adding one never needs renumbering. Helpers without a title or paper (``hard_ce``, ``hint``,
    ...) are building blocks, not methods, and are left out.
    """
    infos = [(name, registry.info(name)) for name in registry.names()]
    chosen = sorted(((n, i) for n, i in infos if i.title and i.paper), key=lambda item: _sort_key(*item))
    return [Entry(name, i.title, i.paper, i.knowledge, i.inputs, i.recipe) for name, i in chosen]


def method(name: str) -> Entry:
    """The catalog entry of ``name``; a loss without catalog metadata raises with the catalogued names."""
    entries = catalog()
    for entry in entries:
        if entry.name == name:
            return entry
    raise KeyError(f"no method {name!r} in the catalogue; known: {', '.join(e.name for e in entries)}")


def markdown_table(entries: list[Entry] | None = None) -> str:
    """The README's method table (between its ``method-table`` markers), one row per catalog entry."""
    lines = ["| method | name | knowledge | needs | recipe |", "|---|---|---|---|---|"]
    for entry in catalog() if entries is None else entries:
        title = f"{entry.title} ({entry.paper})"
        cells = [title, f"`{entry.name}`", entry.knowledge or "", entry.inputs, f"`{entry.recipe}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
