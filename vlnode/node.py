"""The embedded node (``vlnode serve``): listener and stable-study detection in one process.

Past one machine the same pieces run as separate processes on a shared PostgreSQL; here they
are threads, plus optional extra listener processes on the same port (SO_REUSEPORT).
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from types import FrameType

from dicom_node.recovery import RunMarker, record_unrecorded_files
from dicom_node.server import Listener
from dicom_node.spool import Spool
from dicom_node.stable import StableStudyDetector
from store.database import make_engine, upgrade_schema
from store.jobs import requeue_interrupted_jobs
from vlnode.settings import Settings

log = logging.getLogger(__name__)


def _run_extra_listener(settings: Settings, stop: threading.Event | None = None) -> None:
    """Body of an extra listener process: same port, own engine, stops on SIGTERM."""
    configure_logging(settings.logging.level)
    engine = make_engine(settings.database_url)
    spool = Spool(
        settings.store.data_dir,
        settings.node.min_free_disk_mb * 2**20,
        settings.store.spool_sync,
    )
    listener = Listener(settings, engine, spool)
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
        self.listener = Listener(settings, self.engine, self.spool)
        self.detector = StableStudyDetector(
            self.engine, settings.study.stable_seconds, settings.study.check_interval_seconds
        )
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
        requeued = requeue_interrupted_jobs(self.engine)
        if requeued:
            log.info("requeued %d job(s) left running by the previous run", requeued)
        self.listener.start()
        context = multiprocessing.get_context("spawn")
        for index in range(1, self.settings.node.listener_processes):
            child = context.Process(
                target=_run_extra_listener, args=(self.settings,), name=f"listener-{index}"
            )
            child.start()
            self._children.append(child)
        self.detector.start()

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
        self.detector.stop()
        self.engine.dispose()
        if any(child.is_alive() for child in self._children):
            log.warning("a listener process did not stop: the spool is checked at next start")
        else:
            self.run_marker.clear()
        log.info("stopped")
