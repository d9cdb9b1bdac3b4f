"""Job rows: created when a study goes quiet, claimed by workers, finished or failed.

Readiness is computed from the store alone (``last_received_at`` vs ``ready_through``), so it
survives restarts and works the same with several listener processes on one database.

A claimed job is leased to its worker (``lease_expires_at``), which renews the lease while it
runs. Only the worker holding a running job may finish it: a worker that lost its job (the
lease expired and another worker took it) gets :class:`JobStateError` and writes nothing.
A job whose lease expired goes back to the queue, up to ``max_attempts`` claims.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, Update, and_, func, insert, or_, select, update

from store.records import StudyReady
from store.tables import Instance, Job, JobState, Output, Series, Study, utcnow

__all__ = [
    "ClaimedJob",
    "InstanceFile",
    "JobState",
    "JobStateError",
    "SeriesFiles",
    "claim_next_job",
    "finish_job",
    "job_study",
    "queue_jobs_for_quiet_studies",
    "renew_lease",
    "requeue_expired_jobs",
    "requeue_jobs_of_worker",
    "study_series",
]

_FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.SKIPPED)


class JobStateError(RuntimeError):
    """A job is not (or no longer) this worker's running job."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker now holds, and the study it covers."""

    job_id: int
    study_instance_uid: str
    attempt: int  # 1 for the first claim


@dataclass(frozen=True)
class InstanceFile:
    """One received instance of a series, as the worker reads it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str  # relative to the data directory
    calling_ae_title: str


@dataclass(frozen=True)
class SeriesFiles:
    """A series of a study and its instances (in the order they were received)."""

    series_instance_uid: str
    modality: str
    instances: tuple[InstanceFile, ...]


def queue_jobs_for_quiet_studies(
    engine: Engine, stable_seconds: float, now: dt.datetime | None = None
) -> list[StudyReady]:
    """Queue one job for every study with no new instance for ``stable_seconds``.

    A study gets a job once per quiet period: a later instance moves ``last_received_at``
    past ``ready_through`` and the study becomes ready again after the next quiet period.
    Safe to run from several processes at once: the ``ready_through`` update is a
    compare-and-set, and the job's unique key covers the quiet period.
    """
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stable_seconds)
    ready: list[StudyReady] = []
    with engine.connect() as conn:
        candidates = conn.execute(
            select(Study.id, Study.study_instance_uid, Study.last_received_at).where(
                Study.last_received_at <= cutoff,
                or_(Study.ready_through.is_(None), Study.ready_through < Study.last_received_at),
            )
        ).all()
    for study_id, study_uid, last_received in candidates:
        with engine.begin() as conn:
            claimed = conn.execute(
                update(Study)
                .where(
                    Study.id == study_id,
                    Study.last_received_at == last_received,
                    or_(Study.ready_through.is_(None), Study.ready_through < last_received),
                )
                .values(ready_through=last_received)
            ).rowcount
            if not claimed:
                continue  # another process took it, or a new instance just arrived
            result = conn.execute(
                insert(Job).values(
                    study_id=study_id,
                    kind="analyse",
                    state=JobState.QUEUED,
                    attempts=0,
                    study_through=last_received,
                    created_at=now,
                )
            )
            count = conn.scalar(
                select(func.count(Instance.id))
                .join(Series, Instance.series_id == Series.id)
                .where(Series.study_id == study_id)
            )
            pk = result.inserted_primary_key
            assert pk is not None
            ready.append(StudyReady(study_uid, int(pk[0]), int(count or 0)))
    return ready


def claim_next_job(engine: Engine, worker: str, lease_seconds: float) -> ClaimedJob | None:
    """Move the oldest queued job to ``running`` for ``worker``, leased for ``lease_seconds``.

    One ``UPDATE ... WHERE id = (oldest queued) RETURNING``: on PostgreSQL the subquery takes
    the row ``FOR UPDATE SKIP LOCKED``, so concurrent workers take different jobs; SQLite
    runs the statement under its write lock, so the oldest queued job is read and claimed
    at once. Returns None when nothing is queued.
    """
    now = utcnow()
    oldest = select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        row = conn.execute(
            update(Job)
            .where(Job.id == oldest.scalar_subquery(), Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                started_at=now,
                finished_at=None,
                worker=worker,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            )
            .returning(Job.id, Job.study_id, Job.attempts)
        ).first()
        if row is None:
            return None
        study_uid = conn.execute(
            select(Study.study_instance_uid).where(Study.id == row.study_id)
        ).scalar_one()
    return ClaimedJob(int(row.id), study_uid, int(row.attempts))


def renew_lease(engine: Engine, job_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend ``worker``'s lease on its running job; False when the job is no longer its own."""
    with engine.begin() as conn:
        renewed = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker == worker, Job.state == JobState.RUNNING)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        ).rowcount
    return bool(renewed)


def finish_job(
    engine: Engine,
    job_id: int,
    worker: str,
    *,
    state: JobState = JobState.DONE,
    reason: str | None = None,
) -> None:
    """End ``worker``'s running job ``done``, or ``failed`` / ``skipped`` with a reason.

    Raises
    ------
    ValueError
        ``state`` is not a final state, or a failed or skipped job has no reason.
    JobStateError
        The job is not running, or runs for another worker (its lease expired and it was
        taken up again): nothing is written.
    """
    check_final_state(state, reason)
    with engine.begin() as conn:
        finished = conn.execute(finish_statement(job_id, worker, state, reason)).rowcount
    if not finished:
        raise job_state_error(engine, job_id, worker)


def check_final_state(state: JobState, reason: str | None) -> None:
    """Reject a state a job cannot end in, and a failure or skip without a reason."""
    if state not in _FINAL_STATES:
        raise ValueError(f"a job ends done, failed or skipped, not {state}")
    if state != JobState.DONE and not (reason and reason.strip()):
        raise ValueError(f"a {state} job needs a reason a person can act on")


def finish_statement(job_id: int, worker: str, state: JobState, reason: str | None) -> Update:
    """The compare-and-set that ends ``worker``'s running job (no row: not its job)."""
    return (
        update(Job)
        .where(Job.id == job_id, Job.worker == worker, Job.state == JobState.RUNNING)
        .values(state=state, reason=reason, finished_at=utcnow(), lease_expires_at=None)
    )


def job_state_error(engine: Engine, job_id: int, worker: str) -> JobStateError:
    """The error for a worker that no longer holds ``job_id``, saying where the job is now."""
    with engine.connect() as conn:
        row = conn.execute(select(Job.state, Job.worker).where(Job.id == job_id)).first()
    if row is None:
        return JobStateError(f"job {job_id} does not exist")
    holder = f" by worker {row.worker}" if row.worker else ""
    return JobStateError(
        f"job {job_id} is not a running job of worker {worker}: it is {row.state}{holder}"
    )


def requeue_expired_jobs(
    engine: Engine, max_attempts: int, now: dt.datetime | None = None
) -> tuple[int, int]:
    """Take back running jobs whose worker stopped renewing its lease; return (requeued, failed).

    A job goes back to the queue while it has been claimed fewer than ``max_attempts`` times;
    after that it ends ``failed``: a study that stops its worker every time is not tried for
    ever. A running job without a lease (claimed before leases existed) counts as expired.
    """
    now = now or utcnow()
    expired = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now)
    with engine.connect() as conn:
        candidates = conn.execute(
            select(Job.id, Job.worker, Job.attempts, Job.lease_expires_at).where(
                Job.state == JobState.RUNNING, expired
            )
        ).all()
    requeued = failed = 0
    for job_id, worker, attempts, lease in candidates:
        since = f" at {lease:%Y-%m-%d %H:%M:%S} UTC" if lease else ""
        if attempts < max_attempts:
            values: dict[str, Any] = {
                "state": JobState.QUEUED,
                "worker": None,
                "lease_expires_at": None,
                "reason": f"requeued: the lease of worker {worker} expired{since} "
                f"(attempt {attempts} of {max_attempts})",
            }
        else:
            values = {
                "state": JobState.FAILED,
                "finished_at": now,
                "lease_expires_at": None,
                "reason": _stopped_reason(job_id, worker, attempts),
            }
        with engine.begin() as conn:
            # Compare-and-set: the worker may have renewed or finished since we looked.
            changed = conn.execute(
                update(Job)
                .where(
                    Job.id == job_id,
                    Job.state == JobState.RUNNING,
                    Job.attempts == attempts,
                    expired,
                )
                .values(**values)
            ).rowcount
        if changed and values["state"] == JobState.QUEUED:
            requeued += 1
        elif changed:
            failed += 1
    return requeued, failed


def _stopped_reason(job_id: int, worker: str | None, attempts: int) -> str:
    return (
        f"the worker stopped during each of {attempts} attempts (last on worker {worker}); "
        f"look at the worker's log for job {job_id}, then fix what stopped it (memory, the "
        "device, a study too large for the models); the study is not read again on its own"
    )


def requeue_jobs_of_worker(engine: Engine, worker: str, *, max_attempts: int | None = None) -> int:
    """At ``worker``'s restart, put its own running jobs back to ``queued``; return how many.

    Other workers' jobs are left alone: they may still be running (their leases say when
    they are not). With ``max_attempts``, a job already claimed that many times ends
    ``failed`` instead, as :func:`requeue_expired_jobs` would do.
    """
    own = and_(Job.state == JobState.RUNNING, Job.worker == worker)
    with engine.begin() as conn:
        if max_attempts is not None:
            for job_id, attempts in conn.execute(
                select(Job.id, Job.attempts).where(own, Job.attempts >= max_attempts)
            ).all():
                conn.execute(
                    update(Job)
                    .where(Job.id == job_id, own)
                    .values(
                        state=JobState.FAILED,
                        finished_at=utcnow(),
                        lease_expires_at=None,
                        reason=_stopped_reason(job_id, worker, attempts),
                    )
                )
        return conn.execute(
            update(Job)
            .where(own)
            .values(
                state=JobState.QUEUED,
                worker=None,
                lease_expires_at=None,
                reason=f"requeued: worker {worker} restarted while running it",
            )
        ).rowcount


def job_study(engine: Engine, job_id: int) -> str:
    """The Study Instance UID of a job."""
    with engine.connect() as conn:
        uid = conn.scalar(
            select(Study.study_instance_uid)
            .join(Job, Job.study_id == Study.id)
            .where(Job.id == job_id)
        )
    if uid is None:
        raise JobStateError(f"job {job_id} does not exist")
    return uid


def study_series(engine: Engine, study_instance_uid: str) -> list[SeriesFiles]:
    """Every series of a study with its instances, leaving out the node's own outputs.

    The PACS may forward our SR and SEG back to us; they are stored, but are not input to a
    reading. A series left with no instance (one of our output series) is left out.
    """
    own = select(Output.sop_instance_uid).where(
        Output.sop_instance_uid == Instance.sop_instance_uid
    )
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Series.series_instance_uid,
                Series.modality,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.transfer_syntax_uid,
                Instance.file_path,
                Instance.calling_ae_title,
            )
            .join(Study, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
            .where(Study.study_instance_uid == study_instance_uid, ~own.exists())
            .order_by(Series.id, Instance.id)
        ).all()
    grouped: dict[str, tuple[str, list[InstanceFile]]] = {}
    for series_uid, modality, *instance in rows:
        grouped.setdefault(series_uid, (modality, []))[1].append(InstanceFile(*instance))
    return [
        SeriesFiles(uid, modality, tuple(instances))
        for uid, (modality, instances) in grouped.items()
    ]


RETRYABLE = (JobState.FAILED, JobState.SKIPPED)


def retry_jobs(engine: Engine, job_ids: Sequence[int]) -> dict[int, str | None]:
    """Queue ended jobs again at an operator's request (after a fix: a routing rule, a
    package, memory); their attempts start over. Returns, per job id, None when queued again
    or why not (unknown, or not failed or skipped)."""
    outcome: dict[int, str | None] = {}
    with engine.begin() as conn:
        for job_id in job_ids:
            state = conn.execute(select(Job.state).where(Job.id == job_id)).scalar()
            if state is None:
                outcome[job_id] = f"job {job_id} does not exist"
                continue
            changed = conn.execute(
                update(Job)
                .where(Job.id == job_id, Job.state.in_(RETRYABLE))
                .values(
                    state=JobState.QUEUED,
                    attempts=0,
                    worker=None,
                    lease_expires_at=None,
                    started_at=None,
                    finished_at=None,
                    reason=f"queued again by an operator at {utcnow():%Y-%m-%d %H:%M:%S} UTC",
                )
            ).rowcount
            outcome[job_id] = (
                None if changed else f"job {job_id} is {state}; only failed or skipped jobs retry"
            )
    return outcome


@dataclass(frozen=True)
class JobLine:
    job_id: int
    study_instance_uid: str
    state: JobState
    attempts: int
    worker: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    reason: str | None


def list_jobs(engine: Engine, state: JobState | None = None, limit: int = 50) -> list[JobLine]:
    """The newest jobs first, optionally only those in ``state``."""
    query = (
        select(
            Job.id,
            Study.study_instance_uid,
            Job.state,
            Job.attempts,
            Job.worker,
            Job.created_at,
            Job.finished_at,
            Job.reason,
        )
        .join(Study, Job.study_id == Study.id)
        .order_by(Job.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(Job.state == state)
    with engine.connect() as conn:
        return [JobLine(*row) for row in conn.execute(query)]
