"""Error messages for names that do not exist (losses, connectors, datasets, modules)."""

from __future__ import annotations

import difflib


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown <kind> 'x'; known: a, b (did you mean 'y'?)' — shared by every name lookup."""
    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    message = f"unknown {kind} {name!r}; known {plural}: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    if close:
        message += f" (did you mean {close[0]!r}?)"
    return message
