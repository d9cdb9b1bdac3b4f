"""Rows for the store tests: received instances, queued jobs, recorded outputs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, select

from store.instances import InstanceIndex
from store.jobs import ClaimedJob, claim_next_job, queue_jobs_for_quiet_studies
from store.outputs import OutputRecord
from store.records import ReceivedInstance
from store.tables import Job

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


def received(
    sop: str,
    at: dt.datetime = T0,
    study: str = "1.2.3",
    series: str = "1.2.3.1",
    sop_class: str = CT_IMAGE,
    modality: str = "CT",
) -> ReceivedInstance:
    return ReceivedInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=sop_class,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality=modality,
        file_path=f"spool/{study}/{series}/{sop}.dcm",
        size_bytes=1000,
        received_at=at,
        calling_ae_title="PACS",
        association_id=None,
    )


def queue_studies(engine: Engine, count: int, prefix: str = "1.9") -> list[str]:
    """``count`` studies of one instance each, gone quiet, each with a queued job."""
    index = InstanceIndex(engine)
    uids = [f"{prefix}.{i}" for i in range(count)]
    for uid in uids:
        index.record(received(f"{uid}.1.1", study=uid, series=f"{uid}.1"))
    index.close()
    queue_jobs_for_quiet_studies(engine, 1, now=T0 + dt.timedelta(seconds=5))
    return uids


def claimed(engine: Engine, worker: str = "worker-a", lease: float = 60) -> ClaimedJob:
    job = claim_next_job(engine, worker, lease)
    assert job is not None
    return job


def job_row(engine: Engine, job_id: int) -> Job:
    with engine.connect() as conn:
        row = conn.execute(select(Job).where(Job.id == job_id)).one()
    return Job(**row._asdict())


def sr_output(study: str, sha: str = "a" * 64, suffix: str = "1") -> OutputRecord:
    return OutputRecord(
        study_instance_uid=study,
        series_instance_uid=f"2.25.{suffix}0",
        sop_instance_uid=f"2.25.{suffix}1",
        sop_class_uid=COMPREHENSIVE_3D_SR,
        kind="sr",
        variant="comprehensive-3d",
        file_path=f"outputs/{study}/2.25.{suffix}1.dcm",
        sha256=sha,
        package_hash="p" * 64,
    )
