"""One SQLite writer at a time, queued without SQLite's sleeps.

SQLite lets one connection write at a time. A connection that finds the database locked
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... ms between tries whatever the
holder does: with several associations storing at once, an instance's row could wait 5 ms
for a lock held for half a millisecond. Writers of the receive path take this lock first: a
thread lock within the process, and an advisory lock on a file beside the database across
listener processes (``flock``), so the next writer is woken the moment the lock is free.

Other databases (PostgreSQL) queue writers themselves: the lock is then a no-op.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine


class WriterLock:
    """Serialises the write transactions of the processes sharing one SQLite database."""

    def __init__(self, engine: Engine) -> None:
        self._thread_lock = threading.Lock()
        self._path: Path | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._path = Path(f"{database}.writer-lock")
        self._fd = -1

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for one write transaction."""
        if self._path is None:
            yield
            return
        with self._thread_lock:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o640)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
