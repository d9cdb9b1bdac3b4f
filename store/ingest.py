"""Recording what the listener receives: instances, associations, quarantined data."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, insert, update

from store.records import AssociationRequest
from store.tables import Association, QuarantinedInstance, utcnow


def open_association(engine: Engine, request: AssociationRequest) -> int:
    """Write the audit row of an association request; returns its id."""
    with engine.begin() as conn:
        result = conn.execute(
            insert(Association).values(
                calling_ae_title=request.calling_ae_title[:16],
                called_ae_title=request.called_ae_title[:16],
                peer_host=request.peer_host,
                peer_port=request.peer_port,
                accepted=request.accepted,
                reason=request.reason,
                started_at=utcnow(),
                ended_at=None if request.accepted else utcnow(),
                instances_stored=0,
                instances_duplicate=0,
                instances_failed=0,
            )
        )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])


def close_association(
    engine: Engine,
    association_id: int,
    *,
    stored: int,
    duplicate: int,
    failed: int,
    reason: str | None = None,
) -> None:
    """Write the association's end and its counts."""
    values: dict[str, object] = {
        "ended_at": utcnow(),
        "instances_stored": stored,
        "instances_duplicate": duplicate,
        "instances_failed": failed,
    }
    if reason:
        values["reason"] = reason
    with engine.begin() as conn:
        conn.execute(update(Association).where(Association.id == association_id).values(**values))


def record_quarantined(
    engine: Engine,
    *,
    file_path: str,
    reason: str,
    sop_instance_uid: str | None,
    calling_ae_title: str,
    association_id: int | None,
    at: dt.datetime | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(QuarantinedInstance).values(
                file_path=file_path,
                reason=reason,
                sop_instance_uid=sop_instance_uid,
                calling_ae_title=calling_ae_title[:16],
                association_id=association_id,
                received_at=at or utcnow(),
            )
        )
