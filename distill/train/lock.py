"""One writer per run folder: ``<run>/.lock`` holds the owner's pid, created atomically (a hard link); a second
``distill run`` (or ``--resume``) on the same folder while the owner lives is refused. A lock left by a
process that no longer exists (killed with SIGKILL) is taken over."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from distill.train.world import is_main_process

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live process writes this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # unreadable or edited: treated as stale
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock for the block. A folder the user cannot write is
    not locked (nothing can be written there; resuming a finished run needs no write)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(self.path.parent, os.W_OK) or not is_main_process():
            return self  # the other processes of a multi-process run write nothing: the main one holds it
        # the owner record is written to a private file first and hard-linked into place: the link either
        # fails (someone holds the lock) or makes a complete lock file appear at once
        staged = self.path.with_name(f"{LOCK_FILE}.{os.getpid()}.tmp")
        staged.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        try:
            for _ in range(2):  # a stale lock is removed once, then the link is retried
                try:
                    os.link(staged, self.path)
                except FileExistsError:
                    self._refuse_or_clear()
                    continue
                self.held = True
                return self
        finally:
            staged.unlink(missing_ok=True)
        raise RunLockedError(f"{self.path.parent} is locked by another process that keeps re-creating {self.path}")

    def _refuse_or_clear(self) -> None:
        owner = _owner(self.path)
        same_host = owner is not None and owner.get("host") == socket.gethostname()
        if owner is not None and (not same_host or _alive(owner["pid"])):
            where = "" if same_host else f" on {owner.get('host')}"
            raise RunLockedError(
                f"{self.path.parent} is in use by process {owner['pid']}{where}, which is still running; wait for it "
                f"to finish or stop it (a run stopped with SIGTERM or Ctrl-C resumes with --resume). If no such "
                f"process runs, delete {self.path}"
            )
        self.path.unlink(missing_ok=True)  # its owner is gone (killed): the run can be resumed

    def __exit__(self, *exc: object) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
