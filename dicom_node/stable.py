"""Study-stable detection: a thread that queues a job for each study that went quiet."""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from store.jobs import queue_jobs_for_quiet_studies

log = logging.getLogger(__name__)


class StableStudyDetector:
    """Every ``interval`` seconds, queue jobs for studies quiet for ``stable_seconds``."""

    def __init__(self, engine: Engine, stable_seconds: float, interval: float) -> None:
        self.engine = engine
        self.stable_seconds = stable_seconds
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stable-studies", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def run_once(self) -> int:
        ready = queue_jobs_for_quiet_studies(self.engine, self.stable_seconds)
        for item in ready:
            log.info(
                "study %s is stable (%d instances): job %d queued",
                item.study_instance_uid,
                item.instances,
                item.job_id,
            )
        return len(ready)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end detection for good
                log.exception("stable-study check failed; retrying in %.0f s", self.interval)
