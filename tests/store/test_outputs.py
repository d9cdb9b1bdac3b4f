"""Outputs and deliveries: one transaction with the job's end, idempotent re-runs, retries."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, update

from store.embeddings import load_embeddings, save_embedding
from store.instances import InstanceIndex
from store.jobs import (
    JobStateError,
    queue_jobs_for_quiet_studies,
    requeue_jobs_of_worker,
    study_series,
)
from store.outputs import (
    DeliveryState,
    claim_due_delivery,
    complete_job,
    delivery_failed,
    delivery_succeeded,
    is_own_output,
    list_deliveries,
    resend,
)
from store.summary import summarise
from store.tables import Delivery, Job, JobState, Output, utcnow
from tests.store.factories import (
    COMPREHENSIVE_3D_SR,
    T0,
    claimed,
    job_row,
    queue_studies,
    received,
    sr_output,
)


def count(engine: Engine, table: type[Output] | type[Delivery]) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def test_complete_job_records_outputs_and_queues_deliveries(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    assert job_row(engine, job.job_id).state == JobState.DONE
    assert is_own_output(engine, sr.sop_instance_uid)
    assert not is_own_output(engine, "2.25.999")
    (line,) = list_deliveries(engine)
    assert (line.destination, line.sop_instance_uid, line.kind) == ("pacs", "2.25.11", "sr")
    assert (line.state, line.attempts) == (DeliveryState.PENDING, 0)


def test_complete_job_is_idempotent(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    both = [(sr.sop_instance_uid, "pacs"), (sr.sop_instance_uid, "archive")]
    complete_job(engine, job.job_id, "worker-a", [sr], both)
    # "pacs" is delivered; "archive" fails once and waits for its retry.
    for _ in range(2):
        due = claim_due_delivery(engine, "sender")
        assert due is not None
        if due.destination == "pacs":
            delivery_succeeded(engine, due.delivery_id)
        else:
            delivery_failed(engine, due.delivery_id, "refused", retry_at=utcnow())
    # The same job taken up again (its worker died before it knew the job was done).
    job_again = _requeue_done(engine, job.job_id)
    complete_job(engine, job_again, "worker-a", [sr], both)
    assert (count(engine, Output), count(engine, Delivery)) == (1, 2)
    states = {d.destination: (d.state, d.attempts) for d in list_deliveries(engine)}
    assert states == {
        "pacs": (DeliveryState.DELIVERED, 1),
        "archive": (DeliveryState.PENDING, 1),
    }
    # A re-run whose object came out different: the delivered copy is stale, send it again.
    changed = dataclasses.replace(sr, sha256="b" * 64, file_path="outputs/new.dcm")
    job_third = _requeue_done(engine, job.job_id)
    complete_job(engine, job_third, "worker-a", [changed], both)
    assert count(engine, Output) == 1
    states = {d.destination: (d.state, d.attempts) for d in list_deliveries(engine)}
    assert states == {
        "pacs": (DeliveryState.PENDING, 0),
        "archive": (DeliveryState.PENDING, 0),
    }
    due = claim_due_delivery(engine, "sender")
    assert due is not None and due.file_path == "outputs/new.dcm"


def _requeue_done(engine: Engine, job_id: int) -> int:
    """Put a done job back to running for worker-a, as if its worker had died before the end."""
    with engine.begin() as conn:
        conn.execute(
            update(Job).where(Job.id == job_id).values(state=JobState.RUNNING, worker="worker-a")
        )
    requeue_jobs_of_worker(engine, "worker-a")
    return claimed(engine, "worker-a").job_id


def test_complete_job_refuses_a_lost_job_and_writes_nothing(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine, "worker-a", lease=1)
    # worker-a's lease expired and worker-b took the job up.
    requeue_jobs_of_worker(engine, "worker-a")
    claimed(engine, "worker-b")
    sr = sr_output(study)
    with pytest.raises(JobStateError, match="worker-b"):
        complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    assert (count(engine, Output), count(engine, Delivery)) == (0, 0)
    assert job_row(engine, job.job_id).state == JobState.RUNNING


def test_complete_job_rolls_back_on_an_unknown_output(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    with pytest.raises(ValueError, match=r"2\.25\.404"):
        complete_job(engine, job.job_id, "worker-a", [sr_output(study)], [("2.25.404", "pacs")])
    assert count(engine, Output) == 0
    assert job_row(engine, job.job_id).state == JobState.RUNNING


def test_delivery_claim_retry_dead_and_resend(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    due = claim_due_delivery(engine, "sender-1")
    assert due is not None
    assert (due.destination, due.sop_instance_uid, due.sop_class_uid, due.attempts) == (
        "pacs",
        sr.sop_instance_uid,
        COMPREHENSIVE_3D_SR,
        1,
    )
    assert due.file_path == sr.file_path
    # Held by sender-1: nobody else takes it.
    assert claim_due_delivery(engine, "sender-2") is None
    retry_at = utcnow() + dt.timedelta(seconds=30)
    delivery_failed(engine, due.delivery_id, "connection refused", retry_at=retry_at)
    (line,) = list_deliveries(engine, DeliveryState.PENDING)
    assert line.last_error == "connection refused" and line.next_attempt_at == retry_at
    # Not yet due; due once the retry time has come.
    assert claim_due_delivery(engine, "sender-1") is None
    again = claim_due_delivery(engine, "sender-1", now=retry_at + dt.timedelta(seconds=1))
    assert again is not None and again.attempts == 2
    delivery_failed(engine, again.delivery_id, "called AE title not recognised", retry_at=None)
    (dead,) = list_deliveries(engine, DeliveryState.DEAD)
    assert dead.last_error == "called AE title not recognised" and dead.attempts == 2
    assert claim_due_delivery(engine, "sender-1", now=retry_at + dt.timedelta(days=1)) is None
    summary = summarise(engine)
    assert summary.outputs == 1 and summary.deliveries_by_state == {"dead": 1}
    assert [d.id for d in summary.dead_letters] == [dead.id]
    assert resend(engine) == 1
    assert resend(engine) == 0
    (line,) = list_deliveries(engine)
    assert (line.state, line.attempts) == (DeliveryState.PENDING, 0)
    third = claim_due_delivery(engine, "sender-1")
    assert third is not None and third.attempts == 1
    delivery_succeeded(engine, third.delivery_id)
    (line,) = list_deliveries(engine, DeliveryState.DELIVERED)
    assert line.delivered_at is not None
    # Given ids go back whatever their state.
    assert resend(engine, [line.id]) == 1 and resend(engine, []) == 0


def test_sending_delivery_of_a_dead_sender_is_taken_again(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    first = claim_due_delivery(engine, "sender-1", lease_seconds=10)
    assert first is not None
    assert claim_due_delivery(engine, "sender-2", now=utcnow() + dt.timedelta(seconds=5)) is None
    taken = claim_due_delivery(engine, "sender-2", now=utcnow() + dt.timedelta(seconds=11))
    assert taken is not None and taken.delivery_id == first.delivery_id and taken.attempts == 2


def test_a_stale_senders_failure_leaves_the_newer_try_alone(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    first = claim_due_delivery(engine, "sender-1", lease_seconds=10)
    assert first is not None
    taken = claim_due_delivery(engine, "sender-2", now=utcnow() + dt.timedelta(seconds=11))
    assert taken is not None
    # sender-1 comes back from its stalled try and reports a failure: not recorded.
    assert not delivery_failed(
        engine, first.delivery_id, "timed out", retry_at=None, sender="sender-1", attempt=1
    )
    (line,) = list_deliveries(engine)
    assert line.state == DeliveryState.SENDING and line.last_error is None
    assert delivery_failed(
        engine, taken.delivery_id, "refused", retry_at=None, sender="sender-2", attempt=2
    )
    (line,) = list_deliveries(engine)
    assert line.state == DeliveryState.DEAD and line.last_error == "refused"


def test_study_series_excludes_own_outputs(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [])
    index = InstanceIndex(engine)
    index.record(received(f"{study}.1.2", study=study, series=f"{study}.1"))
    # The PACS forwards our SR back: stored, in its own series, but not read.
    index.record(
        received(
            sr.sop_instance_uid,
            study=study,
            series=sr.series_instance_uid,
            sop_class=COMPREHENSIVE_3D_SR,
            modality="SR",
        )
    )
    series = study_series(engine, study)
    assert [s.series_instance_uid for s in series] == [f"{study}.1"]
    assert [i.sop_instance_uid for i in series[0].instances] == [f"{study}.1.1", f"{study}.1.2"]
    assert series[0].modality == "CT"
    assert series[0].instances[0].file_path == f"spool/{study}/{study}.1/{study}.1.1.dcm"
    assert study_series(engine, "9.9.9") == []


def test_own_output_does_not_reopen_the_study(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [])
    later = T0 + dt.timedelta(hours=1)
    index = InstanceIndex(engine)
    forwarded = received(
        sr.sop_instance_uid, later, study, sr.series_instance_uid, COMPREHENSIVE_3D_SR, "SR"
    )
    assert index.record(forwarded) is True
    assert queue_jobs_for_quiet_studies(engine, 1, now=later + dt.timedelta(minutes=5)) == []
    # Someone else's SR in the same study does re-open it.
    other = dataclasses.replace(forwarded, sop_instance_uid="2.25.777")
    assert index.record(other) is True
    ready = queue_jobs_for_quiet_studies(engine, 1, now=later + dt.timedelta(minutes=5))
    assert [r.study_instance_uid for r in ready] == [study]


def test_embeddings_saved_replaced_and_loaded(engine: Engine) -> None:
    common = {
        "study_instance_uid": "1.2",
        "package_name": "cxr",
        "package_version": "1.0",
        "package_path": "/models/cxr",
    }
    save_embedding(
        engine, series_instance_uid="1.2.1", package_hash="h1", vector=np.ones(4), **common
    )
    save_embedding(
        engine,
        series_instance_uid="1.2.2",
        package_hash="h1",
        vector=np.arange(3, dtype=np.float64),
        **common,
    )
    # The same package reads series 1.2.1 again: replaced, not added.
    save_embedding(
        engine, series_instance_uid="1.2.1", package_hash="h1", vector=np.full(4, 0.5), **common
    )
    stored = load_embeddings(engine)
    assert [(e.series_instance_uid, e.package_hash) for e in stored] == [
        ("1.2.1", "h1"),
        ("1.2.2", "h1"),
    ]
    assert stored[0].vector.dtype == np.float32
    np.testing.assert_array_equal(stored[0].vector, np.full(4, 0.5, dtype=np.float32))
    np.testing.assert_array_equal(stored[1].vector, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        save_embedding(
            engine,
            series_instance_uid="1.2.3",
            package_hash="h1",
            vector=np.ones((2, 2)),
            **common,
        )
    with pytest.raises(ValueError, match="NaN"):
        save_embedding(
            engine,
            series_instance_uid="1.2.3",
            package_hash="h1",
            vector=np.array([np.nan]),
            **common,
        )
