"""Recording what the listener receives: instances, associations, quarantined data."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite

from store.records import AssociationRequest, ReceivedInstance
from store.tables import Association, Base, Instance, QuarantinedInstance, Series, Study, utcnow


def _insert_ignoring_conflict(conn: Connection, table: type[Base], **values: object) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING; True if a row was inserted.

    RETURNING tells inserted from skipped on both back ends (rowcount does not on psycopg).
    """
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values).on_conflict_do_nothing()
    primary_key = sa_inspect(table).primary_key[0]
    return conn.execute(stmt.returning(primary_key)).first() is not None


def instance_path(engine: Engine, sop_instance_uid: str) -> str | None:
    """The spool path of an instance already recorded, or None."""
    with engine.connect() as conn:
        return conn.scalar(
            select(Instance.file_path).where(Instance.sop_instance_uid == sop_instance_uid)
        )


def record_instance(engine: Engine, item: ReceivedInstance) -> bool:
    """Record an instance whose file is already durable; True if new, False if a duplicate.

    One transaction: the study's ``last_received_at`` moves forward (re-opening a study that
    was ready), the series and instance rows are created if missing.
    """
    with engine.begin() as conn:
        _insert_ignoring_conflict(
            conn,
            Study,
            study_instance_uid=item.study_instance_uid,
            first_received_at=item.received_at,
            last_received_at=item.received_at,
        )
        study_id = conn.scalar(
            select(Study.id).where(Study.study_instance_uid == item.study_instance_uid)
        )
        _insert_ignoring_conflict(
            conn,
            Series,
            study_id=study_id,
            series_instance_uid=item.series_instance_uid,
            modality=item.modality,
        )
        series_id = conn.scalar(
            select(Series.id).where(Series.series_instance_uid == item.series_instance_uid)
        )
        inserted = _insert_ignoring_conflict(
            conn,
            Instance,
            series_id=series_id,
            sop_instance_uid=item.sop_instance_uid,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax_uid=item.transfer_syntax_uid,
            file_path=item.file_path,
            size_bytes=item.size_bytes,
            received_at=item.received_at,
            calling_ae_title=item.calling_ae_title,
            association_id=item.association_id,
        )
        if inserted:
            conn.execute(
                update(Study)
                .where(Study.id == study_id, Study.last_received_at < item.received_at)
                .values(last_received_at=item.received_at)
            )
        return bool(inserted)


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
