"""The worker: claims ready studies' jobs, reads them, writes SR files and queues deliveries.

One job at a time per worker. A claimed job is leased: a thread renews the lease while the
study is read, and a worker that dies simply stops renewing, so another worker (or this one
after a restart) takes the job up once the lease has expired, up to ``worker.max_attempts``.
Outputs have UIDs derived from the study, the packages' hashes and the task, and are recorded
together with the job's completion in one transaction: a job taken up again writes the same
objects, never a second copy. Any failure ends the job ``failed`` with a reason a person can
act on, and the next job goes on.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import Engine

from inference.dicom_out.sr import build_measurement_report
from inference.dicom_out.text_sr import build_text_report
from inference.dicom_out.uids import output_uid
from inference.packages import PackageError
from inference.reader import SeriesInput, StudyNotRead, StudyReader, StudyReading
from inference.routing import RoutingError
from inference.volume.types import VolumeError
from store.embeddings import save_embedding
from store.jobs import (
    ClaimedJob,
    JobState,
    JobStateError,
    claim_next_job,
    finish_job,
    renew_lease,
    requeue_expired_jobs,
    study_series,
)
from store.outputs import OutputRecord, complete_job
from vlnode.settings import Settings

log = logging.getLogger(__name__)

OUTPUTS_DIR = "outputs"


def default_worker_name(role: str = "") -> str:
    """Host name and process id (``role`` instead of the pid for the embedded node)."""
    return f"{socket.gethostname()}-{role or os.getpid()}"


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    state: JobState
    reason: str | None = None
    # Seconds per stage of a job that was read (inference.reader, plus "encode"), for benchmarks.
    timings: dict[str, float] = field(default_factory=dict)


class Worker:
    """Claims and runs jobs until stopped; ``run_once`` runs at most one job."""

    def __init__(self, settings: Settings, engine: Engine, reader: StudyReader, name: str):
        self.settings = settings
        self.engine = engine
        self.reader = reader
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the job in hand (its lease lets another worker finish it if we cannot)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        interval = self.settings.worker.poll_interval_seconds
        while not self._stop.is_set():
            try:
                outcome = self.run_once()
            except Exception:  # the database went away: try again later, never die
                log.exception("worker %s: cannot claim a job; retrying", self.name)
                outcome = None
            if outcome is None:
                self._stop.wait(interval)

    def run_once(self) -> JobOutcome | None:
        """Claim one job and run it; None when no job was waiting."""
        requeued, failed = requeue_expired_jobs(self.engine, self.settings.worker.max_attempts)
        if requeued or failed:
            log.warning(
                "%d job(s) of stopped workers requeued, %d failed after their last attempt",
                requeued,
                failed,
            )
        job = claim_next_job(self.engine, self.name, self.settings.worker.lease_seconds)
        if job is None:
            return None
        log.info(
            "job %d: reading study %s (attempt %d)", job.job_id, job.study_instance_uid, job.attempt
        )
        with self._lease(job):
            return self._run_job(job)

    def _run_job(self, job: ClaimedJob) -> JobOutcome:
        try:
            reading = self.reader.read(self._series(job.study_instance_uid))
        except StudyNotRead as exc:
            return self._finish(job, JobState.SKIPPED, str(exc))
        except (VolumeError, PackageError, RoutingError) as exc:
            return self._finish(job, JobState.FAILED, str(exc))
        except Exception as exc:  # a bug or a model error: say so, and keep the worker alive
            log.exception("job %d: unexpected error", job.job_id)
            return self._finish(
                job,
                JobState.FAILED,
                f"internal error while reading the study ({type(exc).__name__}: {exc}); "
                f"the worker log of {self.name} has the traceback",
            )
        try:
            started = time.perf_counter()
            self._save_embeddings(job, reading)
            outputs, deliveries = self._write_outputs(job, reading)
            complete_job(self.engine, job.job_id, self.name, outputs, deliveries)
            reading.timings["encode"] = time.perf_counter() - started
        except JobStateError as exc:
            log.warning(
                "job %d: finished elsewhere or lease lost (%s): results dropped", job.job_id, exc
            )
            return JobOutcome(job.job_id, JobState.RUNNING, str(exc))
        except Exception as exc:
            log.exception("job %d: cannot write or record the outputs", job.job_id)
            return self._finish(
                job, JobState.FAILED, f"cannot write the outputs ({type(exc).__name__}: {exc})"
            )
        log.info(
            "job %d: done, %d output(s), %d delivery(ies) queued",
            job.job_id,
            len(outputs),
            len(deliveries),
        )
        return JobOutcome(job.job_id, JobState.DONE, timings=reading.timings)

    def _finish(self, job: ClaimedJob, state: JobState, reason: str) -> JobOutcome:
        log.warning("job %d: %s: %s", job.job_id, state, reason)
        try:
            finish_job(self.engine, job.job_id, self.name, state=state, reason=reason)
        except JobStateError as exc:
            log.warning("job %d: %s", job.job_id, exc)
        return JobOutcome(job.job_id, state, reason)

    def _series(self, study_uid: str) -> list[SeriesInput]:
        data_dir = self.settings.store.data_dir
        return [
            SeriesInput(
                s.series_instance_uid,
                tuple(data_dir / i.file_path for i in s.instances),
                tuple(sorted({i.calling_ae_title for i in s.instances})),
            )
            for s in study_series(self.engine, study_uid)
            if s.instances
        ]

    def _save_embeddings(self, job: ClaimedJob, reading: StudyReading) -> None:
        for item in reading.readings:
            algorithm = item.findings.algorithm
            save_embedding(
                self.engine,
                study_instance_uid=job.study_instance_uid,
                series_instance_uid=item.findings.series_instance_uid,
                package_name=algorithm.name,
                package_version=algorithm.version,
                package_hash=algorithm.content_hash,
                package_path=str(item.package_path),
                vector=item.embedding,
            )

    def _write_outputs(
        self, job: ClaimedJob, reading: StudyReading
    ) -> tuple[list[OutputRecord], list[tuple[str, str]]]:
        """One SR per format the destinations ask for; each destination gets its format."""
        wanted = reading.rule.destinations
        destinations = [d for d in self.settings.destinations if not wanted or d.name in wanted]
        if not self.settings.destinations:
            log.warning("job %d: no destinations configured: results kept, not sent", job.job_id)
        formats = sorted({d.sr_format for d in destinations} or {"comprehensive-3d"})
        packages = hashlib.sha256("+".join(sorted(reading.package_hashes)).encode()).hexdigest()
        findings = [r.findings for r in reading.readings]
        outputs: dict[str, OutputRecord] = {}
        for variant in formats:
            study_uid = job.study_instance_uid
            series_uid = output_uid(study_uid, packages, "findings", variant, "series")
            sop_uid = output_uid(study_uid, packages, "findings", variant, "instance")
            build = build_measurement_report if variant == "comprehensive-3d" else build_text_report
            dataset = build(
                reading.sources,
                findings,
                impression=None,
                segmentation=None,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
            )
            path, digest = self._write(study_uid, dataset)
            outputs[variant] = OutputRecord(
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
                sop_class_uid=str(dataset.SOPClassUID),
                kind="sr",
                variant=variant,
                file_path=path,
                sha256=digest,
                package_hash=packages,
            )
        deliveries = [(outputs[d.sr_format].sop_instance_uid, d.name) for d in destinations]
        return list(outputs.values()), deliveries

    def _write(self, study_uid: str, dataset: Dataset) -> tuple[str, str]:
        """Write durably (temporary name, fsync, rename); the path relative to the data dir."""
        data_dir = self.settings.store.data_dir
        relative = Path(OUTPUTS_DIR) / study_uid / f"{dataset.SOPInstanceUID}.dcm"
        final = data_dir / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
        pydicom.dcmwrite(temporary, dataset, enforce_file_format=True)
        with temporary.open("rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
            os.fsync(f.fileno())
        os.replace(temporary, final)
        folder = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return str(relative), digest

    @contextlib.contextmanager
    def _lease(self, job: ClaimedJob) -> Iterator[None]:
        """Renew the job's lease every third of its length while the job runs."""
        done = threading.Event()
        lease = self.settings.worker.lease_seconds

        def renew() -> None:
            while not done.wait(lease / 3):
                try:
                    if not renew_lease(self.engine, job.job_id, self.name, lease):
                        log.warning("job %d: lease lost", job.job_id)
                        return
                except Exception:
                    log.exception("job %d: cannot renew the lease", job.job_id)

        thread = threading.Thread(target=renew, name=f"lease-{job.job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=10)
