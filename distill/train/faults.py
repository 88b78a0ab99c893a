"""Named points where a run can be killed on purpose, to test that every one of them resumes exactly.

``DISTILL_KILL_AT=NAME`` (or ``NAME#N``, the N-th time it is reached) makes the process SIGKILL itself at
that point: no ``finally``, no flush, like a power cut or the OOM killer. Points: ``step`` (after an
optimizer step), ``checkpoint:<file>`` (one file of a checkpoint written to its staging folder),
``checkpoint:staged`` (before the rename), ``checkpoint:renamed`` (before latest.json),
``checkpoint:latest`` (before older checkpoints are pruned) and ``checkpoint:done``. Unset, a point costs a
dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_VARIABLE = "DISTILL_KILL_AT"
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """SIGKILL this process when ``DISTILL_KILL_AT`` names this point (and its count is reached)."""
    target = os.environ.get(KILL_VARIABLE)
    if not target:
        return
    wanted, _, count = target.partition("#")
    if wanted != name:
        return
    _reached[name] += 1
    if _reached[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
