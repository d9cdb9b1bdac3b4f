"""Claiming, leases and ownership of jobs, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, update

from store.jobs import (
    JobStateError,
    claim_next_job,
    finish_job,
    job_study,
    renew_lease,
    requeue_expired_jobs,
    requeue_jobs_of_worker,
)
from store.tables import Job, JobState, utcnow
from tests.store.factories import claimed, job_row, queue_studies


def test_claim_takes_oldest_and_sets_the_lease(engine: Engine) -> None:
    studies = queue_studies(engine, 2)
    before = utcnow()
    job = claimed(engine, "worker-a", lease=60)
    assert (job.study_instance_uid, job.attempt) == (studies[0], 1)
    assert job_study(engine, job.job_id) == studies[0]
    row = job_row(engine, job.job_id)
    assert row.state == JobState.RUNNING and row.worker == "worker-a" and row.attempts == 1
    assert row.started_at is not None and row.started_at >= before
    assert row.lease_expires_at is not None
    assert 59 <= (row.lease_expires_at - before).total_seconds() <= 62


def test_renew_only_own_running_job(engine: Engine) -> None:
    queue_studies(engine, 1)
    job = claimed(engine, "worker-a", lease=1)
    first_lease = job_row(engine, job.job_id).lease_expires_at
    assert renew_lease(engine, job.job_id, "worker-a", 600) is True
    renewed = job_row(engine, job.job_id).lease_expires_at
    assert first_lease is not None and renewed is not None and renewed > first_lease
    assert renew_lease(engine, job.job_id, "worker-b", 600) is False
    finish_job(engine, job.job_id, "worker-a")
    assert renew_lease(engine, job.job_id, "worker-a", 600) is False


def test_finish_checks_owner_and_state(engine: Engine) -> None:
    queue_studies(engine, 1)
    job = claimed(engine, "worker-a")
    with pytest.raises(JobStateError, match="worker-a"):
        finish_job(engine, job.job_id, "worker-b")
    assert job_row(engine, job.job_id).state == JobState.RUNNING
    finish_job(engine, job.job_id, "worker-a", state=JobState.SKIPPED, reason="no rule takes MR")
    row = job_row(engine, job.job_id)
    assert (row.state, row.reason, row.lease_expires_at) == (
        JobState.SKIPPED,
        "no rule takes MR",
        None,
    )
    assert row.finished_at is not None
    # Finishing twice is refused: the job is no longer running.
    with pytest.raises(JobStateError, match="skipped"):
        finish_job(engine, job.job_id, "worker-a")
    with pytest.raises(JobStateError, match="does not exist"):
        finish_job(engine, 999, "worker-a")


def test_finish_rejects_wrong_states_and_missing_reasons(engine: Engine) -> None:
    queue_studies(engine, 1)
    job = claimed(engine, "worker-a")
    with pytest.raises(ValueError, match="needs a reason"):
        finish_job(engine, job.job_id, "worker-a", state=JobState.FAILED)
    with pytest.raises(ValueError, match="needs a reason"):
        finish_job(engine, job.job_id, "worker-a", state=JobState.SKIPPED, reason="  ")
    with pytest.raises(ValueError, match="not queued"):
        finish_job(engine, job.job_id, "worker-a", state=JobState.QUEUED)
    assert job_row(engine, job.job_id).state == JobState.RUNNING


def test_expired_lease_requeued_then_failed_at_the_attempt_limit(engine: Engine) -> None:
    queue_studies(engine, 1)
    for attempt in (1, 2, 3):
        job = claimed(engine, f"worker-{attempt}", lease=30)
        assert job.attempt == attempt
        # Not expired yet: nothing moves.
        assert requeue_expired_jobs(engine, 3, now=utcnow() + dt.timedelta(seconds=5)) == (0, 0)
        later = utcnow() + dt.timedelta(seconds=31)
        if attempt < 3:
            assert requeue_expired_jobs(engine, 3, now=later) == (1, 0)
            row = job_row(engine, job.job_id)
            assert row.state == JobState.QUEUED and row.worker is None
            assert row.reason is not None and f"worker-{attempt}" in row.reason
            # The worker that lost the job cannot finish it any more.
            with pytest.raises(JobStateError):
                finish_job(engine, job.job_id, f"worker-{attempt}")
        else:
            assert requeue_expired_jobs(engine, 3, now=later) == (0, 1)
    row = job_row(engine, job.job_id)
    assert row.state == JobState.FAILED and row.finished_at is not None
    assert row.reason is not None
    assert "each of 3 attempts" in row.reason and f"job {job.job_id}" in row.reason
    assert claim_next_job(engine, "worker-4", 30) is None


def test_running_job_without_lease_counts_as_expired(engine: Engine) -> None:
    queue_studies(engine, 1)
    job = claimed(engine, "old-worker")
    with engine.begin() as conn:
        conn.execute(update(Job).values(lease_expires_at=None))
    assert requeue_expired_jobs(engine, 3) == (1, 0)
    assert job_row(engine, job.job_id).state == JobState.QUEUED


def test_requeue_jobs_of_worker_touches_only_that_worker(engine: Engine) -> None:
    queue_studies(engine, 3)
    a = claimed(engine, "worker-a")
    b = claimed(engine, "worker-b")
    done = claimed(engine, "worker-a")
    finish_job(engine, done.job_id, "worker-a")
    assert requeue_jobs_of_worker(engine, "worker-a") == 1
    assert job_row(engine, a.job_id).state == JobState.QUEUED
    assert job_row(engine, b.job_id).state == JobState.RUNNING
    assert job_row(engine, b.job_id).worker == "worker-b"
    assert job_row(engine, done.job_id).state == JobState.DONE
    assert requeue_jobs_of_worker(engine, "worker-a") == 0


def test_requeue_jobs_of_worker_fails_a_job_at_the_attempt_limit(engine: Engine) -> None:
    queue_studies(engine, 1)
    job = claimed(engine, "worker-a")
    requeue_jobs_of_worker(engine, "worker-a")
    claimed(engine, "worker-a")
    assert requeue_jobs_of_worker(engine, "worker-a", max_attempts=2) == 0
    row = job_row(engine, job.job_id)
    assert row.state == JobState.FAILED and "each of 2 attempts" in (row.reason or "")


def test_concurrent_workers_never_take_the_same_job(engine: Engine) -> None:
    """Four workers, each on its own connection, drain 40 jobs: each taken exactly once."""
    queue_studies(engine, 40)
    taken: dict[str, list[int]] = {f"w{i}": [] for i in range(4)}
    start = threading.Barrier(len(taken))
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            start.wait()
            while (job := claim_next_job(engine, name, 60)) is not None:
                taken[name].append(job.job_id)
                finish_job(engine, job.job_id, name)
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    every = [job_id for ids in taken.values() for job_id in ids]
    assert len(every) == 40 and len(set(every)) == 40
    if engine.dialect.name == "postgresql":
        # SKIP LOCKED lets the workers run side by side rather than one after another.
        assert sum(1 for ids in taken.values() if ids) >= 2
