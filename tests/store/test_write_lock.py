"""SQLite writers queue on one lock, across threads and processes."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from store.write_lock import WriterLock


def test_threads_take_turns(tmp_path: Path) -> None:
    lock = WriterLock(create_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    events: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def first() -> None:
        with lock.transaction():
            events.append("first in")
            inside.set()
            release.wait(10)
            events.append("first out")

    def second() -> None:
        inside.wait(10)
        with lock.transaction():
            events.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    inside.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert events == ["first in", "first out", "second in"]
    assert (tmp_path / "node.db.writer-lock").exists()


def test_another_process_holding_the_lock_is_waited_for(tmp_path: Path) -> None:
    lock_path = tmp_path / "node.db.writer-lock"
    marker = tmp_path / "released"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock_path)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(0.5)\n"
            f"open({str(marker)!r}, 'w').close()\n"
            "fcntl.flock(fd, fcntl.LOCK_UN)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = WriterLock(create_engine(f"sqlite:///{tmp_path / 'node.db'}"))
        with lock.transaction():
            assert marker.exists()  # got the lock only after the other process let it go
        holder.wait(10)


def test_no_lock_file_for_an_in_memory_or_server_database(tmp_path: Path) -> None:
    for url in ("sqlite://", "sqlite:///:memory:"):
        with WriterLock(create_engine(url)).transaction():
            pass
    assert list(tmp_path.iterdir()) == []


def test_one_warm_connection_is_reused_until_a_transaction_fails(tmp_path: Path) -> None:
    lock = WriterLock(create_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    with lock.transaction() as first:
        assert first is not None
        first.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with lock.transaction() as again:
        assert again is first
    with pytest.raises(RuntimeError), lock.transaction() as failing:
        assert failing is first
        raise RuntimeError("the transaction failed")
    with lock.transaction() as fresh:
        assert fresh is not None and fresh is not first
        assert fresh.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
    lock.close()
    assert first.closed and fresh.closed
