"""One SQLite writer at a time, queued without SQLite's sleeps, on one warm connection.

SQLite lets one connection write at a time. A connection that finds the database locked
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, ... ms between tries whatever the
holder does: with several associations storing at once, an instance's row could wait 5 ms
for a lock held for half a millisecond. Writers of the receive path take this lock first: a
thread lock within the process, and an advisory lock on a file beside the database across
listener processes (``flock``), so the next writer is woken the moment the lock is free.

A transaction taken through the lock runs on the process's one writing connection. Each
SQLite connection has its own page cache, dropped whenever another connection has written:
with a connection per thread, every instance's transaction re-read the pages it touches.

Other databases (PostgreSQL) queue writers themselves and keep their own caches: there is no
lock, and each transaction takes a pooled connection.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine


class WriterLock:
    """Serialises the write transactions of the processes sharing one SQLite database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._thread_lock = threading.Lock()
        self._path: Path | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._path = Path(f"{database}.writer-lock")
        self._fd = -1
        self._connection: Connection | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, committed at the end (rolled back on an exception)."""
        if self._path is None:
            with self.engine.begin() as conn:
                yield conn
            return
        with self._thread_lock:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o640)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                connection = self._writer_connection()
                with connection.begin():
                    yield connection
            except BaseException:
                self._drop_connection()  # a failed transaction may leave it unusable
                raise
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _writer_connection(self) -> Connection:
        if self._connection is None or self._connection.closed or self._connection.invalidated:
            self._connection = self.engine.connect()
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        """Return the writing connection (at shutdown)."""
        with self._thread_lock:
            self._drop_connection()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
