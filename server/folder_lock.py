"""Locks on the data folder, so two processes never clean up or serve under each other.

Two `flock` files inside the data folder (released by the kernel when their process dies, so a killed server
leaves nothing to clear by hand):

- `server.lock`, held exclusively by a server for its lifetime, with its pid inside: a second server on the same
  folder refuses to start, naming the folder and that pid, before it touches anything.
- `store.lock`, held shared by every process that opens the store (the server, `dmlscope train`/`eval`/`sweep`).
  The server's start-up cleanup (half-written uploads, runs left `running`) is only correct when no other
  process is writing, so it runs only while the server can hold this lock exclusively; with a command-line run
  in progress it is skipped, and the next start does it.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from models.errors import Conflict

SERVER_LOCK = "server.lock"
STORE_LOCK = "store.lock"


class FolderInUse(Conflict):
    """Another server holds the data folder."""


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


class ServerLock:
    """The data folder's server lock, taken on construction (or FolderInUse) and held until `release`."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / SERVER_LOCK
        fd = _open(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.path.read_text(errors="replace").strip() or "unknown"
            raise FolderInUse(f"the data folder {data_dir.resolve()} is in use by a running dmlscope server (pid "
                              f"{pid}); use that server, stop it first, or give this one another --data-dir "
                              f"(DMLSCOPE_DATA_DIR)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock; the file stays (deleting it would race)
            self._fd = None


class StoreLock:
    """A shared hold on the data folder for as long as a store is open; `alone()` upgrades it for a moment."""

    def __init__(self, data_dir: Path):
        self._fd: int | None = _open(data_dir / STORE_LOCK)
        fcntl.flock(self._fd, fcntl.LOCK_SH)  # waits only while a server runs its start-up cleanup (a moment)
        self.exclusive = False

    @contextmanager
    def alone(self) -> Iterator[bool]:
        """Hold the folder exclusively if no other process has the store open; yields whether it does."""
        assert self._fd is not None, "the store is closed"
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)  # a refused conversion may have dropped the shared hold
            yield False
            return
        self.exclusive = True
        try:
            yield True
        finally:
            self.exclusive = False
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
