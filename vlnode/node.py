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
from vlnode.settings import Settings
from vlnode.workers import build_worker

log = logging.getLogger(__name__)


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

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
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
        self.worker = build_worker(
            settings, self.engine, settings.worker.name or default_worker_name("serve")
        )
        self.sender = Sender(settings, self.engine, f"{self.worker.name}-sender")
        self.run_marker = RunMarker(settings.store.data_dir)
        self._children: list[multiprocessing.process.BaseProcess] = []
        self._stop = threading.Event()

    def start(self) -> None:
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
        self.worker.start()
        self.sender.start()

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
        self.worker.stop()
        self.sender.stop()
        self.engine.dispose()
        if any(child.is_alive() for child in self._children):
            log.warning("a listener process did not stop: the spool is checked at next start")
        else:
            self.run_marker.clear()
        log.info("stopped")
