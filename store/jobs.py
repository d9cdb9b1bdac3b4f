"""Job rows: created when a study goes quiet, claimed by workers, finished or failed.

Readiness is computed from the store alone (``last_received_at`` vs ``ready_through``), so it
survives restarts and works the same with several listener processes on one database.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, func, insert, or_, select, update

from store.records import StudyReady
from store.tables import Instance, Job, JobState, Series, Study, utcnow


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


def claim_next_job(engine: Engine, worker: str) -> int | None:
    """Move the oldest queued job to ``running`` for ``worker``; return its id or None.

    PostgreSQL uses ``FOR UPDATE SKIP LOCKED`` so several workers never take the same job;
    SQLite serialises writers, and the state check in the UPDATE makes the claim atomic.
    """
    with engine.begin() as conn:
        query = select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        job_id = conn.scalar(query)
        if job_id is None:
            return None
        claimed = conn.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.RUNNING,
                attempts=Job.attempts + 1,
                started_at=utcnow(),
                worker=worker,
            )
        ).rowcount
        return int(job_id) if claimed else None


def finish_job(engine: Engine, job_id: int, *, failed_reason: str | None = None) -> None:
    """Mark a running job ``done``, or ``failed`` with a reason a person can act on."""
    state = JobState.FAILED if failed_reason else JobState.DONE
    with engine.begin() as conn:
        conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=state, reason=failed_reason, finished_at=utcnow())
        )


def requeue_interrupted_jobs(engine: Engine) -> int:
    """Put jobs left ``running`` by a stopped process back to ``queued``; return how many."""
    with engine.begin() as conn:
        return conn.execute(
            update(Job)
            .where(Job.state == JobState.RUNNING)
            .values(state=JobState.QUEUED, reason="requeued after restart", worker=None)
        ).rowcount
