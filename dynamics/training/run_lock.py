"""An exclusive lock on a run folder: one training writes a folder at a time.

The lock is ``<folder>/.lock``, held with ``fcntl.flock`` (the kernel releases it when the process ends, also on
SIGKILL) and holding the owner's pid and host. Taking it:

* another live process holds it -> :class:`RunLockedError` naming that pid (wait for it, or choose another --out);
* the file names a process that no longer holds it (it crashed or was killed) -> the stale lock is reported
  (logged at WARNING, and in :attr:`RunLock.stale_owner`) and taken over;
* released (the file removed) on exit, on an exception and on Ctrl-C.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> with RunLock(d) as lock:
...     RunLock(d).acquire()
Traceback (most recent call last):
...
dynamics.training.run_lock.RunLockedError: ... is being written by another training (pid ...); ...
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
from pathlib import Path
from types import TracebackType

from dynamics.errors import RunStateError

__all__ = ["RunLock", "RunLockedError", "LOCK_NAME"]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLockedError(RunStateError):
    """Another live process is writing this run folder."""


class RunLock:
    """The exclusive lock of run folder ``root`` (created if needed); use as a context manager."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None
        self.stale_owner: dict | None = None

    def acquire(self) -> RunLock:
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunLockedError(f"{self.root} is being written by another training (pid "
                                     f"{owner.get('pid', '?')} on {owner.get('host', '?')}); wait for it to finish, "
                                     "or choose another --out") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the holder released (and removed) the file between our open and flock: try again
        owner = _read_owner(fd)
        if owner:
            self.stale_owner = owner
            log.warning("%s: removing a stale lock left by pid %s on %s, which no longer runs (it crashed or was "
                        "killed); the run folder is checked before it is used", self.root, owner.get("pid", "?"),
                        owner.get("host", "?"))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # unlink first: a waiting process then finds no stale owner
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_owner(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        owner = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        owner = {"pid": "unknown (unreadable lock file)"}
    return owner if isinstance(owner, dict) else {}
