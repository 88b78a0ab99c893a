"""The file system as a run meets it: can the run folder be written at all (checked before any training),
and an OS error while writing (disk full, read-only, permission) as one sentence that says what is safe."""

from __future__ import annotations

import errno
import os
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def write_problem(folder: Path) -> str | None:
    """Why nothing can be written into ``folder`` (created if missing), or None when a probe file can be."""
    probe = Path(folder) / f".distill-write-probe-{os.getpid()}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        return error.strerror or str(error)
    return None


def storage_error_message(error: OSError) -> str | None:
    """One sentence for an OS error of a write that a user can act on; None for other errors."""
    where = f" writing {error.filename}" if error.filename else ""
    if error.errno in NO_SPACE:
        return (
            f"no space left on the device{where}. Every checkpoint written before is intact (each is written "
            "aside and renamed into place only when whole, and verified on resume): free some space, then run "
            "the same command with --resume"
        )
    if error.errno in NOT_WRITABLE:
        return (
            f"cannot write{where} ({error.strerror}); earlier files are untouched. Make the folder writable or "
            "choose another --out"
        )
    return None
