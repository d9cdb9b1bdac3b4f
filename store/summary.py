"""Read-only summaries for operators (``vlnode status``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Engine, func, select

from store.outputs import DeliveryLine, list_deliveries
from store.tables import (
    Association,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    Output,
    QuarantinedInstance,
    Series,
    Study,
)


@dataclass(frozen=True)
class StudyLine:
    study_instance_uid: str
    series: int
    instances: int
    last_received_at: dt.datetime
    job_state: str | None
    job_reason: str | None = None  # why the latest job failed or was skipped


@dataclass(frozen=True)
class AssociationLine:
    started_at: dt.datetime
    calling_ae_title: str
    peer_host: str
    accepted: bool
    reason: str | None
    stored: int
    duplicate: int
    failed: int
    ended: bool


@dataclass(frozen=True)
class NodeSummary:
    studies: int
    series: int
    instances: int
    quarantined: int
    jobs_by_state: dict[str, int]
    recent_studies: list[StudyLine]
    recent_associations: list[AssociationLine]
    outputs: int = 0
    deliveries_by_state: dict[str, int] = field(default_factory=dict)
    # The most recent dead letters (deliveries given up), newest first.
    dead_letters: list[DeliveryLine] = field(default_factory=list)


def summarise(engine: Engine, limit: int = 10) -> NodeSummary:
    with engine.connect() as conn:
        counts = {
            name: int(conn.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in (
                ("studies", Study),
                ("series", Series),
                ("instances", Instance),
                ("quarantined", QuarantinedInstance),
                ("outputs", Output),
            )
        }
        jobs = {
            str(state): int(n)
            for state, n in conn.execute(select(Job.state, func.count()).group_by(Job.state))
        }
        deliveries = {
            str(state): int(n)
            for state, n in conn.execute(
                select(Delivery.state, func.count()).group_by(Delivery.state)
            )
        }
        series_count = (
            select(func.count(Series.id)).where(Series.study_id == Study.id).scalar_subquery()
        )
        instance_count = (
            select(func.count(Instance.id))
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == Study.id)
            .scalar_subquery()
        )
        latest_job = (
            select(Job.state)
            .where(Job.study_id == Study.id)
            .order_by(Job.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        latest_reason = (
            select(Job.reason)
            .where(Job.study_id == Study.id)
            .order_by(Job.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        studies = [
            StudyLine(uid, int(s), int(i), last, str(state) if state else None, reason)
            for uid, s, i, last, state, reason in conn.execute(
                select(
                    Study.study_instance_uid,
                    series_count,
                    instance_count,
                    Study.last_received_at,
                    latest_job,
                    latest_reason,
                )
                .order_by(Study.last_received_at.desc())
                .limit(limit)
            )
        ]
        associations = [
            AssociationLine(
                a.started_at,
                a.calling_ae_title,
                a.peer_host,
                a.accepted,
                a.reason,
                a.instances_stored,
                a.instances_duplicate,
                a.instances_failed,
                a.ended_at is not None,
            )
            for a in conn.execute(select(Association).order_by(Association.id.desc()).limit(limit))
        ]
    dead = (
        list_deliveries(engine, DeliveryState.DEAD, limit)
        if deliveries.get(DeliveryState.DEAD)
        else []
    )
    return NodeSummary(
        studies=counts["studies"],
        series=counts["series"],
        instances=counts["instances"],
        quarantined=counts["quarantined"],
        jobs_by_state=jobs,
        recent_studies=studies,
        recent_associations=associations,
        outputs=counts["outputs"],
        deliveries_by_state=deliveries,
        dead_letters=dead,
    )
