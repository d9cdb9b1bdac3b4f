"""The audit trail: who connected (and who was refused), what was read, what was sent where.

The events come from the rows the node keeps anyway: an ``association`` row per association
request (accepted or rejected, with the reason and what was stored), a ``job`` row per study
read, a ``delivery_attempt`` row per try of the sender (written by :func:`record_delivery_try`,
with the peer as configured at that moment), and ``audit_event`` rows (model activation...).
:func:`audit_trail` reads them as one time-ordered list of :class:`AuditRecord`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select

from store.tables import (
    Association,
    AuditEvent,
    Delivery,
    DeliveryAttempt,
    Job,
    Output,
    Study,
    utcnow,
)

DELIVERY_OUTCOMES = ("delivered", "retry", "dead")


@dataclass(frozen=True)
class AuditRecord:
    """One event: when, what kind, with whom (AE title and address), how it ended, details."""

    at: dt.datetime
    kind: str  # association | job | delivery | event
    peer_ae_title: str
    peer_address: str  # host:port of the peer; a job's worker
    outcome: str
    detail: str


def record_delivery_try(
    engine: Engine,
    delivery_id: int,
    destination: str,
    peer: tuple[str, str, int] | None,
    outcome: str,
    error: str | None = None,
) -> None:
    """Write one try of the sender: ``peer`` is (AE title, host, port), None if unconfigured."""
    if outcome not in DELIVERY_OUTCOMES:
        raise ValueError(f"a delivery try ends {', '.join(DELIVERY_OUTCOMES)}, not {outcome!r}")
    ae_title, host, port = peer or ("", "", 0)
    with engine.begin() as conn:
        conn.execute(
            insert(DeliveryAttempt).values(
                delivery_id=delivery_id,
                at=utcnow(),
                destination=destination,
                peer_ae_title=ae_title,
                peer_host=host,
                peer_port=port,
                outcome=outcome,
                error=error,
            )
        )


def audit_trail(engine: Engine, since: dt.datetime | None = None) -> list[AuditRecord]:
    """Every audited event at or after ``since`` (all when None), oldest first."""
    records: list[AuditRecord] = []
    with engine.connect() as conn:
        associations = select(Association)
        if since is not None:
            associations = associations.where(Association.started_at >= since)
        for a in conn.execute(associations):
            if not a.accepted:
                outcome = "rejected"
            elif a.ended_at is None:
                outcome = "open"
            else:
                outcome = "aborted" if a.reason == "aborted" else "released"
            detail = f"called {a.called_ae_title}"
            if a.accepted:
                detail += (
                    f"; stored {a.instances_stored}, duplicate {a.instances_duplicate}, "
                    f"failed {a.instances_failed}"
                )
            if a.reason:
                detail += f"; {a.reason}"
            records.append(
                AuditRecord(
                    a.started_at,
                    "association",
                    a.calling_ae_title,
                    f"{a.peer_host}:{a.peer_port}",
                    outcome,
                    detail,
                )
            )

        job_at = func.coalesce(Job.finished_at, Job.started_at, Job.created_at)
        query = select(
            job_at,
            Job.id,
            Job.state,
            Job.worker,
            Job.attempts,
            Job.reason,
            Study.study_instance_uid,
        ).join(Study, Job.study_id == Study.id)
        if since is not None:
            query = query.where(job_at >= since)
        for at, job_id, state, worker, attempts, reason, study_uid in conn.execute(query):
            detail = f"job {job_id}, study {study_uid}, attempts {attempts}"
            if reason:
                detail += f"; {reason}"
            records.append(AuditRecord(at, "job", "", worker or "", str(state), detail))

        tries = (
            select(DeliveryAttempt, Output.sop_instance_uid, Output.kind)
            .join(Delivery, DeliveryAttempt.delivery_id == Delivery.id)
            .join(Output, Delivery.output_id == Output.id)
        )
        if since is not None:
            tries = tries.where(DeliveryAttempt.at >= since)
        for row in conn.execute(tries):
            detail = f"delivery {row.delivery_id} to {row.destination}: {row.kind}"
            detail += f" {row.sop_instance_uid}"
            if row.error:
                detail += f"; {row.error}"
            address = f"{row.peer_host}:{row.peer_port}" if row.peer_host else ""
            records.append(
                AuditRecord(row.at, "delivery", row.peer_ae_title, address, row.outcome, detail)
            )

        events = select(AuditEvent)
        if since is not None:
            events = events.where(AuditEvent.at >= since)
        for e in conn.execute(events):
            records.append(AuditRecord(e.at, "event", "", "", e.kind, e.detail))
    return sorted(records, key=lambda r: r.at)
