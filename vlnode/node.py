"""The embedded node (``vlnode serve``): listener, stable studies, worker and sender together.

Past one machine the same pieces run as separate processes on a shared PostgreSQL; here they
are threads, plus optional extra listener processes that serve connections this process
accepts and hands them (dicom_node.dispatch).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from multiprocessing.sharedctypes import SynchronizedArray
from types import FrameType
from typing import Any

from dicom_node.dispatch import ConnectionDispatcher, LoadBoard
from dicom_node.recovery import RunMarker, record_unrecorded_files
from dicom_node.sender import Sender
from dicom_node.server import Listener, ListenerRole
from dicom_node.spool import Spool
from dicom_node.stable import StableStudyDetector
from inference.worker import default_worker_name
from store.database import make_engine, upgrade_schema
from store.jobs import requeue_jobs_of_worker
from store.retention import PeriodicPurge, RetentionPolicy
from vlnode.health import MonitoringServer, start_monitoring
from vlnode.settings import Settings
from vlnode.workers import build_worker

log = logging.getLogger(__name__)

# What a node process runs: ``vlnode serve`` all three, ``vlnode listen`` the listener alone
# (with the stable-study detector, which queues the jobs).
LISTEN, WORK, SEND = "listen", "work", "send"
ALL_PARTS = frozenset((LISTEN, WORK, SEND))


def _run_extra_listener(
    settings: Settings,
    index: int,
    counts: SynchronizedArray[Any],
    channel: socket.socket,
    stop: threading.Event | None = None,
) -> None:
    """Body of an extra listener process: serves the connections the main process hands it."""
    configure_logging(settings.logging.level)
    engine = make_engine(settings.database_url)
    spool = Spool(
        settings.store.data_dir,
        settings.node.min_free_disk_mb * 2**20,
        settings.store.spool_sync,
    )
    listener = Listener(
        settings, engine, spool, ListenerRole(LoadBoard(counts), index, None, channel)
    )
    done = stop or threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent relays Ctrl-C as SIGTERM
    listener.start()
    done.wait()
    listener.stop()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    # pynetdicom logs every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))


class Node:
    """Start, run until told to stop, and stop gracefully."""

    def __init__(self, settings: Settings, parts: frozenset[str] = ALL_PARTS) -> None:
        self.settings = settings
        self.parts = parts
        settings.store.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(settings.database_url)
        upgrade_schema(self.engine)
        self.spool = Spool(
            settings.store.data_dir,
            settings.node.min_free_disk_mb * 2**20,
            settings.store.spool_sync,
        )
        # Extra listener processes get their connections from this one (dicom_node.dispatch).
        self._context = multiprocessing.get_context("spawn")
        processes = settings.node.listener_processes
        self._counts = self._context.Array("i", processes)
        self._channels = [socket.socketpair(socket.AF_UNIX) for _ in range(processes - 1)]
        role = None
        if processes > 1:
            dispatcher = ConnectionDispatcher(
                LoadBoard(self._counts), [None, *(ours for ours, _ in self._channels)]
            )
            role = ListenerRole(LoadBoard(self._counts), 0, dispatcher, None)
        self.listener = Listener(settings, self.engine, self.spool, role)
        self.detector = StableStudyDetector(
            self.engine, settings.study.stable_seconds, settings.study.check_interval_seconds
        )
        # The embedded node's worker keeps its name across restarts, so a restart takes up at
        # once the job it was killed in; separate `vlnode work` processes rely on leases.
        name = settings.worker.name or default_worker_name("serve")
        self.worker = build_worker(settings, self.engine, name) if WORK in parts else None
        self.sender = Sender(settings, self.engine, f"{name}-sender") if SEND in parts else None
        retention = settings.retention
        self.retention = PeriodicPurge(
            self.engine,
            settings.store.data_dir,
            RetentionPolicy(retention.keep_days, retention.min_free_disk_mb * 2**20),
            retention.interval_seconds,
        )
        self.monitoring: MonitoringServer | None = None
        self.run_marker = RunMarker(settings.store.data_dir)
        self._children: list[multiprocessing.process.BaseProcess] = []
        self._stop = threading.Event()

    def start(self) -> None:
        if self.parts == ALL_PARTS:
            self._recover_spool()
        else:
            # Split over processes the spool is shared: other listeners' files being received
            # are in spool/.incoming, and the run marker is not this process's alone. On
            # PostgreSQL a commit is durable before the store is acknowledged, so no row is
            # lost in a crash; a crashed reception's temporary file is left behind.
            log.info("running %s only: the shared spool is not cleaned up", ", ".join(self.parts))
        if self.worker is not None:
            requeued = requeue_jobs_of_worker(
                self.engine, self.worker.name, max_attempts=self.settings.worker.max_attempts
            )
            if requeued:
                log.info("requeued %d job(s) left running by the previous run", requeued)
        for index, (_, theirs) in enumerate(self._channels, start=1):
            child = self._context.Process(
                target=_run_extra_listener,
                args=(self.settings, index, self._counts, theirs),
                name=f"listener-{index}",
            )
            child.start()
            theirs.close()  # the child has its own descriptor now
            self._children.append(child)
        self.listener.start()
        self.detector.start()
        if self.worker is not None:
            self.worker.start()
            self.retention.start()  # with the workers: they know when a study is done with
        if self.sender is not None:
            self.sender.start()
        self.monitoring = start_monitoring(
            self.settings, self.engine, {"listener": self._listener_bound}
        )

    def _recover_spool(self) -> None:
        """Remove partial files, and after an unclean stop record the files without a row."""
        removed = self.spool.remove_partial_files()
        if removed:
            log.info("removed %d partial file(s) of stores that never completed", removed)
        if self.run_marker.previous_run_was_unclean():
            log.warning(
                "the previous run did not stop cleanly: checking the spool against the store"
            )
            report = record_unrecorded_files(self.spool, self.engine)
            log.warning(
                "spool check done: %d instance(s) recorded again, %d torn file(s) quarantined, "
                "%d unreadable file(s)",
                report.recorded,
                len(report.torn),
                len(report.unreadable),
            )
        self.run_marker.set()

    def _listener_bound(self) -> str | None:
        server = self.listener.server
        bound = server.socket if server is not None else None
        if bound is None or bound.fileno() < 0:
            return "the DICOM listener is not bound"
        return None

    def run_until_signalled(self) -> None:
        def request_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: finishing in-flight stores", signal.Signals(signum).name)
            self._stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        self.start()
        self._stop.wait()
        self.stop()

    def stop(self) -> None:
        for child in self._children:
            if child.pid is not None and child.is_alive():
                child.terminate()  # SIGTERM: the child finishes its in-flight stores
        self.listener.stop()
        for child in self._children:
            child.join(timeout=35)
        for ours, _ in self._channels:
            ours.close()
        self.detector.stop()
        if self.monitoring is not None:
            self.monitoring.stop()
        self.retention.stop()
        if self.worker is not None:
            self.worker.stop()
        if self.sender is not None:
            self.sender.stop()
        self.engine.dispose()
        if any(child.is_alive() for child in self._children):
            log.warning("a listener process did not stop: the spool is checked at next start")
        elif self.parts == ALL_PARTS:
            self.run_marker.clear()
        log.info("stopped")
