"""Store state transitions on SQLite and PostgreSQL: instances, duplicates, jobs, audit."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from store import ingest
from store.instances import InstanceIndex, instance_path
from store.jobs import (
    claim_next_job,
    finish_job,
    queue_jobs_for_quiet_studies,
    requeue_jobs_of_worker,
)
from store.records import AssociationRequest, ReceivedInstance
from store.summary import summarise
from store.tables import Job, JobState, Study

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def instance(
    sop: str, at: dt.datetime, study: str = "1.2.3", series: str = "1.2.3.1"
) -> ReceivedInstance:
    return ReceivedInstance(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        file_path=f"spool/{study}/{series}/{sop}.dcm",
        size_bytes=1000,
        received_at=at,
        calling_ae_title="PACS",
        association_id=None,
    )


def jobs(engine: Engine) -> list[tuple[int, JobState]]:
    with engine.connect() as conn:
        return [(r.study_id, r.state) for r in conn.execute(select(Job).order_by(Job.id))]


def test_instance_recorded_once(engine: Engine) -> None:
    index = InstanceIndex(engine)
    assert index.record(instance("1.2.3.1.1", T0)) is True
    assert index.record(instance("1.2.3.1.1", T0)) is False
    # Another process (its own caches) sees the same rows.
    assert InstanceIndex(engine).record(instance("1.2.3.1.1", T0)) is False
    assert InstanceIndex(engine).record(instance("1.2.3.1.2", T0)) is True
    assert instance_path(engine, "1.2.3.1.1") == "spool/1.2.3/1.2.3.1/1.2.3.1.1.dcm"
    assert instance_path(engine, "9.9") is None
    summary = summarise(engine)
    assert (summary.studies, summary.series, summary.instances) == (1, 1, 2)


def test_rolled_back_instance_leaves_no_row_and_no_stale_cache(engine: Engine) -> None:
    index = InstanceIndex(engine)
    insert_instance = index._insert_instance

    class FailingInsert:
        def first(self, *_args: Any) -> None:
            raise OSError("database went away")

    index._insert_instance = FailingInsert()  # type: ignore[assignment]
    with pytest.raises(OSError, match="went away"):
        index.record(instance("5.5.1", T0, study="5.5", series="5.5.0"))
    index._insert_instance = insert_instance
    assert instance_path(engine, "5.5.1") is None
    # The study row was rolled back with it: the next instance must recreate it.
    assert index.record(instance("5.5.2", T0, study="5.5", series="5.5.0")) is True
    assert summarise(engine).studies == 1


def test_study_ready_once_per_quiet_period(engine: Engine) -> None:
    for i in range(3):
        InstanceIndex(engine).record(instance(f"1.2.3.1.{i}", T0 + dt.timedelta(seconds=i)))
    # Not quiet long enough yet.
    assert queue_jobs_for_quiet_studies(engine, 30, now=T0 + dt.timedelta(seconds=20)) == []
    ready = queue_jobs_for_quiet_studies(engine, 30, now=T0 + dt.timedelta(seconds=40))
    assert [(r.study_instance_uid, r.instances) for r in ready] == [("1.2.3", 3)]
    # Asking again (a restart, a second process) queues nothing more.
    assert queue_jobs_for_quiet_studies(engine, 30, now=T0 + dt.timedelta(seconds=90)) == []
    # A late instance re-opens the study; after the next quiet period a second job.
    InstanceIndex(engine).record(instance("1.2.3.1.9", T0 + dt.timedelta(seconds=100)))
    assert queue_jobs_for_quiet_studies(engine, 30, now=T0 + dt.timedelta(seconds=110)) == []
    again = queue_jobs_for_quiet_studies(engine, 30, now=T0 + dt.timedelta(seconds=140))
    assert [r.instances for r in again] == [4]
    assert len(jobs(engine)) == 2


def test_concurrent_detectors_queue_one_job(engine: Engine) -> None:
    InstanceIndex(engine).record(instance("1.2.3.1.1", T0))
    results: list[int] = []

    def detect() -> None:
        results.append(
            len(queue_jobs_for_quiet_studies(engine, 1, now=T0 + dt.timedelta(seconds=5)))
        )

    threads = [threading.Thread(target=detect) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 1
    assert len(jobs(engine)) == 1


def test_job_claim_finish_and_requeue(engine: Engine) -> None:
    for study in ("1.1", "2.2"):
        InstanceIndex(engine).record(instance(f"{study}.9", T0, study=study, series=f"{study}.1"))
    queue_jobs_for_quiet_studies(engine, 1, now=T0 + dt.timedelta(seconds=5))
    first = claim_next_job(engine, "worker-a", 60)
    second = claim_next_job(engine, "worker-b", 60)
    assert first is not None and second is not None and first.job_id != second.job_id
    assert (first.study_instance_uid, first.attempt) == ("1.1", 1)
    assert claim_next_job(engine, "worker-c", 60) is None
    finish_job(engine, first.job_id, "worker-a")
    finish_job(
        engine,
        second.job_id,
        "worker-b",
        state=JobState.FAILED,
        reason="series 1.2 has 2 orientations",
    )
    with engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(Job))}
    assert rows[first.job_id].state == JobState.DONE and rows[first.job_id].attempts == 1
    assert rows[second.job_id].state == JobState.FAILED
    assert rows[second.job_id].reason == "series 1.2 has 2 orientations"
    # A job left running by a crashed worker goes back to the queue at its restart.
    InstanceIndex(engine).record(instance("3.3.9", T0, study="3.3", series="3.3.1"))
    queue_jobs_for_quiet_studies(engine, 1, now=T0 + dt.timedelta(seconds=5))
    third = claim_next_job(engine, "worker-a", 60)
    assert third is not None
    assert requeue_jobs_of_worker(engine, "worker-a") == 1
    again = claim_next_job(engine, "worker-a", 60)
    assert again is not None and (again.job_id, again.attempt) == (third.job_id, 2)


def test_association_audit(engine: Engine) -> None:
    rejected = ingest.open_association(
        engine, AssociationRequest("EVIL", "VLNODE", "10.0.0.9", 5555, False, "not allowed")
    )
    accepted = ingest.open_association(
        engine, AssociationRequest("PACS", "VLNODE", "10.0.0.1", 5556, True, None)
    )
    ingest.close_association(engine, accepted, stored=10, duplicate=2, failed=1)
    lines = summarise(engine).recent_associations
    assert [(a.calling_ae_title, a.accepted, a.stored, a.ended) for a in lines] == [
        ("PACS", True, 10, True),
        ("EVIL", False, 0, True),
    ]
    assert rejected != accepted


def test_timestamps_come_back_aware(engine: Engine) -> None:
    InstanceIndex(engine).record(instance("1.2.3.1.1", T0))
    with engine.connect() as conn:
        last = conn.scalar(select(func.max(Study.last_received_at)))
    assert last == T0 and last.tzinfo is not None
