"""The worker: claims ready studies' jobs, reads them, writes SR and SEG files and queues
deliveries.

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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless
from sqlalchemy import Engine

from inference.dicom_out.seg import build_segmentation
from inference.dicom_out.sr import SegmentationReference, build_measurement_report
from inference.dicom_out.text_sr import build_text_report
from inference.dicom_out.uids import output_uid
from inference.packages import PackageError
from inference.reader import SeriesInput, StudyNotRead, StudyReader, StudyReading
from inference.results import LabelMap
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
from vlnode.metrics import observe_job
from vlnode.settings import Destination, Settings

log = logging.getLogger(__name__)

OUTPUTS_DIR = "outputs"
T = TypeVar("T")


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
            else:
                observe_job(str(outcome.state), outcome.timings)  # /metrics of this process

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
        """The study's SEG (when a segmentation package read it) and SR, in every variant the
        destinations ask for; each destination gets its SR and the SEG that SR references.

        The SEG's deliveries are queued before the SR's, so a PACS that files them in order
        holds the SEG by the time the SR points at it.
        """
        wanted = reading.rule.destinations
        destinations = [d for d in self.settings.destinations if not wanted or d.name in wanted]
        if not self.settings.destinations:
            log.warning("job %d: no destinations configured: results kept, not sent", job.job_id)
        packages = hashlib.sha256("+".join(sorted(reading.package_hashes)).encode()).hexdigest()
        study_uid = job.study_instance_uid
        impression = _first(reading.impressions, "impression", job.job_id)
        label_map = _first(reading.label_maps, "label map", job.job_id)
        if label_map is not None and not label_map.labels.any():
            log.warning(
                "job %d: %s found no structure in series %s: no SEG",
                job.job_id,
                label_map.algorithm.name,
                label_map.volume.series.series_instance_uid,
            )
            label_map = None
        # (SR format, SEG variant or "") per destination; with none configured, the default.
        profile = {
            d.name: (d.sr_format, _seg_variant(d) if label_map else "") for d in destinations
        }
        default: tuple[str, str] = ("comprehensive-3d", "binary" if label_map else "")
        segs: dict[str, tuple[OutputRecord, SegmentationReference]] = {}
        srs: dict[tuple[str, str], OutputRecord] = {}
        variants: set[tuple[str, str]] = set(profile.values()) or {default}
        for sr_format, seg_variant in sorted(variants):
            reference = None
            if label_map is not None:
                if seg_variant not in segs:
                    segs[seg_variant] = self._write_seg(
                        study_uid, packages, seg_variant, label_map, reading.sources
                    )
                reference = segs[seg_variant][1]
            variant = f"{sr_format}+{seg_variant}" if seg_variant else sr_format
            series_uid = output_uid(study_uid, packages, "findings", variant, "series")
            sop_uid = output_uid(study_uid, packages, "findings", variant, "instance")
            build = (
                build_measurement_report if sr_format == "comprehensive-3d" else build_text_report
            )
            dataset = build(
                reading.sources,
                [r.findings for r in reading.readings],
                impression=impression,
                segmentation=reference,
                series_instance_uid=series_uid,
                sop_instance_uid=sop_uid,
            )
            srs[(sr_format, seg_variant)] = self._record(
                study_uid, dataset, "sr", variant, packages
            )
        deliveries = [
            (segs[profile[d.name][1]][0].sop_instance_uid, d.name)
            for d in destinations
            if profile[d.name][1] in segs
        ]
        deliveries += [(srs[profile[d.name]].sop_instance_uid, d.name) for d in destinations]
        return [record for record, _ in segs.values()] + list(srs.values()), deliveries

    def _write_seg(
        self,
        study_uid: str,
        packages: str,
        variant: str,
        label_map: LabelMap,
        sources: Sequence[Dataset],
    ) -> tuple[OutputRecord, SegmentationReference]:
        """Encode, write and record one SEG variant (``binary``, ``labelmap``, ``-j2k``)."""
        series = label_map.volume.series.series_instance_uid
        series_uid = output_uid(study_uid, packages, "segmentation", variant, "series")
        sop_uid = output_uid(study_uid, packages, "segmentation", variant, "instance")
        dataset, numbers = build_segmentation(
            [ds for ds in sources if str(ds.get("SeriesInstanceUID", "")) == series],
            label_map,
            series_instance_uid=series_uid,
            sop_instance_uid=sop_uid,
            labelmap=variant.startswith("labelmap"),
            compress=variant.endswith(COMPRESSED_SUFFIX),
            omit_empty_frames=self.settings.worker.seg_omit_empty_frames,
        )
        record = self._record(study_uid, dataset, "seg", variant, packages)
        reference = SegmentationReference(
            sop_class_uid=str(dataset.SOPClassUID),
            sop_instance_uid=sop_uid,
            series_instance_uid=series_uid,
            label_map=label_map,
            segment_numbers=numbers,
        )
        return record, reference

    def _record(
        self, study_uid: str, dataset: Dataset, kind: str, variant: str, packages: str
    ) -> OutputRecord:
        """Write an output durably and describe it for the store."""
        path, digest = self._write(study_uid, dataset)
        return OutputRecord(
            study_instance_uid=study_uid,
            series_instance_uid=str(dataset.SeriesInstanceUID),
            sop_instance_uid=str(dataset.SOPInstanceUID),
            sop_class_uid=str(dataset.SOPClassUID),
            kind=kind,
            variant=variant,
            file_path=path,
            sha256=digest,
            package_hash=packages,
        )

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


COMPRESSED_SUFFIX = "-j2k"


def _seg_variant(destination: Destination) -> str:
    """The SEG a destination asks for: its ``seg_format``, JPEG 2000 lossless when it lists
    that transfer syntax."""
    compressed = str(JPEG2000Lossless) in destination.transfer_syntaxes
    return destination.seg_format + (COMPRESSED_SUFFIX if compressed else "")


def _first(items: Sequence[T], what: str, job_id: int) -> T | None:
    """The one result of a kind an SR carries; a rule that routes several says so in the log."""
    if len(items) > 1:
        log.warning(
            "job %d: %d %ss made; the SR carries the first (route one package of that task)",
            job_id,
            len(items),
            what,
        )
    return items[0] if items else None
