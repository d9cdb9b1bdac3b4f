"""What the node wrote (SR, SEG) and its deliveries to the destinations.

A worker records a job's outputs and queues their deliveries together with the job's end, in
one transaction (:func:`complete_job`). Output UIDs are deterministic, so a job taken up again
after a crash records the same rows; a delivery already made is not made again unless the
object's content changed. The sender claims due deliveries (:func:`claim_due_delivery`), and
ends each delivered, pending again at a later time, or dead: a dead letter waits for a person
(``vlnode deliveries --resend``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update

from store.database import dialect_insert
from store.jobs import JobStateError, finish_statement, job_state_error
from store.tables import Delivery, DeliveryState, JobState, Output, utcnow

__all__ = [
    "DeliveryLine",
    "DeliveryState",
    "DueDelivery",
    "JobStateError",
    "OutputRecord",
    "claim_due_delivery",
    "complete_job",
    "delivery_failed",
    "delivery_succeeded",
    "is_own_output",
    "list_deliveries",
    "resend",
]

OUTPUT_KINDS = ("sr", "seg")


@dataclass(frozen=True)
class OutputRecord:
    """An object a worker wrote into the data directory, to be recorded and delivered."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str  # "sr" | "seg"
    variant: str  # "comprehensive-3d", "basic-text", "binary", "labelmap"
    file_path: str  # relative to the data directory
    sha256: str
    package_hash: str

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {OUTPUT_KINDS}, not {self.kind!r}")
        if not self.sop_instance_uid or not self.file_path:
            raise ValueError("an output needs its SOP Instance UID and its file path")


@dataclass(frozen=True)
class DueDelivery:
    """A delivery the sender now holds: send this file to this destination."""

    delivery_id: int
    destination: str
    file_path: str  # relative to the data directory
    sop_instance_uid: str
    sop_class_uid: str
    attempts: int  # including this one


@dataclass(frozen=True)
class DeliveryLine:
    """One delivery as an operator sees it."""

    id: int
    destination: str
    sop_instance_uid: str
    kind: str
    state: DeliveryState
    attempts: int
    last_error: str | None
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None


class _JobLost(Exception):
    """Rolls the transaction back when the job is not the worker's to complete."""


def complete_job(
    engine: Engine,
    job_id: int,
    worker: str,
    outputs: Sequence[OutputRecord],
    deliveries: Sequence[tuple[str, str]],
) -> None:
    """Record a job's outputs, queue their deliveries and end the job ``done``: one transaction.

    Parameters
    ----------
    outputs
        Upserted by SOP Instance UID: a re-run records its new path and digest on the same row.
    deliveries
        ``(sop_instance_uid, destination name)`` pairs, each naming one of ``outputs`` or an
        output recorded before. A new pair is pending now; an existing one keeps its state
        (a delivered object is not sent again) unless the output's SHA-256 changed, which
        makes it pending again with no attempts.

    Raises
    ------
    JobStateError
        The job is not ``worker``'s running job (its lease expired and it was taken up
        again, or it ended): nothing is written.
    ValueError
        A delivery names an output that is neither given nor recorded: nothing is written.
    """
    now = utcnow()
    by_uid = {o.sop_instance_uid: o for o in outputs}
    try:
        with engine.begin() as conn:
            # First, so the job's row is locked (PostgreSQL) or the write lock held (SQLite)
            # before anything else is read: a requeue cannot slip in between.
            if not conn.execute(finish_statement(job_id, worker, JobState.DONE, None)).rowcount:
                raise _JobLost
            previous = dict(
                conn.execute(
                    select(Output.sop_instance_uid, Output.sha256).where(
                        Output.sop_instance_uid.in_(list(by_uid))
                    )
                ).all()
            )
            insert = dialect_insert(conn)
            for record in by_uid.values():
                values = {
                    "job_id": job_id,
                    "study_instance_uid": record.study_instance_uid,
                    "series_instance_uid": record.series_instance_uid,
                    "sop_class_uid": record.sop_class_uid,
                    "kind": record.kind,
                    "variant": record.variant,
                    "file_path": record.file_path,
                    "sha256": record.sha256,
                    "package_hash": record.package_hash,
                    "updated_at": now,
                }
                statement = insert(Output).values(
                    sop_instance_uid=record.sop_instance_uid, created_at=now, **values
                )
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[Output.sop_instance_uid], set_=values
                    )
                )
            changed = {
                uid
                for uid, record in by_uid.items()
                if uid in previous and previous[uid] != record.sha256
            }
            wanted = {uid for uid, _ in deliveries}
            output_ids = dict(
                conn.execute(
                    select(Output.sop_instance_uid, Output.id).where(
                        Output.sop_instance_uid.in_(list(wanted))
                    )
                ).all()
            )
            for uid, destination in deliveries:
                output_id = output_ids.get(uid)
                if output_id is None:
                    raise ValueError(
                        f"delivery of {uid} to {destination}: no such output in this job or "
                        "recorded before"
                    )
                conn.execute(
                    insert(Delivery)
                    .values(
                        output_id=output_id,
                        destination=destination,
                        state=DeliveryState.PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                    .on_conflict_do_nothing(
                        index_elements=[Delivery.output_id, Delivery.destination]
                    )
                )
                if uid in changed:
                    conn.execute(
                        update(Delivery)
                        .where(Delivery.output_id == output_id, Delivery.destination == destination)
                        .values(_pending_again(now))
                    )
    except _JobLost:
        raise job_state_error(engine, job_id, worker) from None


def _pending_again(now: dt.datetime) -> dict[str, Any]:
    return {
        "state": DeliveryState.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "sender": None,
        "lease_expires_at": None,
        "delivered_at": None,
    }


def claim_due_delivery(
    engine: Engine, sender: str, lease_seconds: float = 300, now: dt.datetime | None = None
) -> DueDelivery | None:
    """Take the delivery due longest, for ``sender``; None when none is due.

    Due: pending with ``next_attempt_at`` reached, or ``sending`` with an expired lease (its
    sender died mid-send). It moves to ``sending`` with one more attempt. As with jobs, one
    ``UPDATE ... RETURNING`` whose subquery skips rows other senders hold (PostgreSQL).
    """
    now = now or utcnow()
    due = or_(
        and_(
            Delivery.state == DeliveryState.PENDING,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        ),
        and_(Delivery.state == DeliveryState.SENDING, Delivery.lease_expires_at < now),
    )
    oldest = select(Delivery.id).where(due).order_by(Delivery.next_attempt_at, Delivery.id)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            oldest = oldest.with_for_update(skip_locked=True)
        row = conn.execute(
            update(Delivery)
            .where(Delivery.id == oldest.limit(1).scalar_subquery(), due)
            .values(
                state=DeliveryState.SENDING,
                attempts=Delivery.attempts + 1,
                sender=sender,
                lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            )
            .returning(Delivery.id, Delivery.output_id, Delivery.destination, Delivery.attempts)
        ).first()
        if row is None:
            return None
        output = conn.execute(
            select(Output.file_path, Output.sop_instance_uid, Output.sop_class_uid).where(
                Output.id == row.output_id
            )
        ).one()
    return DueDelivery(
        delivery_id=int(row.id),
        destination=row.destination,
        file_path=output.file_path,
        sop_instance_uid=output.sop_instance_uid,
        sop_class_uid=output.sop_class_uid,
        attempts=int(row.attempts),
    )


def delivery_succeeded(engine: Engine, delivery_id: int) -> None:
    """The destination stored the object.

    A delivery no longer ``sending`` (its output changed meanwhile and it was queued again,
    or an operator re-queued it) is left as it is: the newer request stands.
    """
    with engine.begin() as conn:
        conn.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.SENDING)
            .values(
                state=DeliveryState.DELIVERED,
                delivered_at=utcnow(),
                last_error=None,
                next_attempt_at=None,
                lease_expires_at=None,
            )
        )


def delivery_failed(
    engine: Engine,
    delivery_id: int,
    error: str,
    *,
    retry_at: dt.datetime | None,
    sender: str | None = None,
    attempt: int | None = None,
) -> bool:
    """A try failed: pending again at ``retry_at``, or dead (``retry_at`` None) with the error.

    With ``sender`` and ``attempt`` (what :func:`claim_due_delivery` handed out), only that
    try is recorded: a sender whose lease expired while it tried, and whose delivery another
    sender has taken up since, leaves the newer try alone. A success needs no such check (the
    destination holds the object, whoever sent it). Returns whether the failure was recorded.
    """
    values: dict[str, Any] = {"last_error": error, "lease_expires_at": None}
    if retry_at is None:
        values.update(state=DeliveryState.DEAD, next_attempt_at=None)
    else:
        values.update(state=DeliveryState.PENDING, next_attempt_at=retry_at)
    held = [Delivery.id == delivery_id, Delivery.state == DeliveryState.SENDING]
    if sender is not None:
        held.append(Delivery.sender == sender)
    if attempt is not None:
        held.append(Delivery.attempts == attempt)
    with engine.begin() as conn:
        result = conn.execute(update(Delivery).where(*held).values(**values))
    return bool(result.rowcount)


def list_deliveries(
    engine: Engine, state: DeliveryState | None = None, limit: int = 50
) -> list[DeliveryLine]:
    """The most recent deliveries (newest first), optionally only those in ``state``."""
    query = (
        select(
            Delivery.id,
            Delivery.destination,
            Output.sop_instance_uid,
            Output.kind,
            Delivery.state,
            Delivery.attempts,
            Delivery.last_error,
            Delivery.next_attempt_at,
            Delivery.delivered_at,
        )
        .join(Output, Delivery.output_id == Output.id)
        .order_by(Delivery.id.desc())
        .limit(limit)
    )
    if state is not None:
        query = query.where(Delivery.state == state)
    with engine.connect() as conn:
        return [DeliveryLine(*row) for row in conn.execute(query)]


def resend(engine: Engine, delivery_ids: Sequence[int] | None = None) -> int:
    """Queue deliveries again now, with no attempts: all dead ones, or those given; how many."""
    if delivery_ids is not None and not delivery_ids:
        return 0
    which = (
        Delivery.state == DeliveryState.DEAD
        if delivery_ids is None
        else Delivery.id.in_(list(delivery_ids))
    )
    with engine.begin() as conn:
        return conn.execute(update(Delivery).where(which).values(_pending_again(utcnow()))).rowcount


def is_own_output(engine: Engine, sop_instance_uid: str) -> bool:
    """Whether an instance is one of the objects this node wrote."""
    with engine.connect() as conn:
        return (
            conn.scalar(select(Output.id).where(Output.sop_instance_uid == sop_instance_uid))
            is not None
        )
