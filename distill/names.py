"""Error messages for names that do not exist (losses, connectors, datasets, modules)."""

from __future__ import annotations

import difflib


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    """'unknown <kind> 'x'; known: a, b (did you mean 'y'?)' — shared by every name lookup. ``name`` may be
    anything a recipe held (a number, a list): it is shown as given."""
    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    message = f"unknown {kind} {name!r}; known {plural}: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5) if isinstance(name, str) else []
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message
