"""Recording received instances: the store's side of the C-STORE hot path.

One short transaction per instance. Study and series ids are cached per process once their
rows are committed (rows are never deleted while the node runs), so a typical instance
costs one INSERT, one UPDATE and the commit. The caller does its file work *inside* the
transaction, after the INSERT has shown the instance is new and before the commit, so a
committed row always has its file and a duplicate never touches the file already stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from store.records import ReceivedInstance
from store.tables import Instance, Series, Study


def _dialect_insert(conn: Connection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


class InstanceIndex:
    """Records instances; thread-safe, one per process and engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._touch_study = (
            update(Study)
            .where(Study.id == bindparam("sid"), Study.last_received_at < bindparam("at"))
            .values(last_received_at=bindparam("at"))
        )

    @contextmanager
    def recording(self, item: ReceivedInstance) -> Iterator[bool]:
        """Open the instance's transaction; yield True if it is new, False if a duplicate.

        The transaction commits when the block exits normally (for a new instance, the
        study's ``last_received_at`` moves forward first, re-opening a study that was
        ready) and rolls back if the block raises.
        """
        learned: list[tuple[dict[str, int], str, int]] = []
        with self.engine.begin() as conn:
            study_id = self._study_id(conn, item, learned)
            series_id = self._series_id(conn, item, study_id, learned)
            insert = _dialect_insert(conn)
            new = (
                conn.execute(
                    insert(Instance)
                    .values(
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
                    .on_conflict_do_nothing()
                    .returning(Instance.id)
                ).first()
                is not None
            )
            yield new
            if new:
                conn.execute(self._touch_study, {"sid": study_id, "at": item.received_at})
        with self._lock:  # only reached once committed: cache the ids the rows now have
            for cache, uid, row_id in learned:
                cache[uid] = row_id

    def _study_id(
        self,
        conn: Connection,
        item: ReceivedInstance,
        learned: list[tuple[dict[str, int], str, int]],
    ) -> int:
        cached = self._study_ids.get(item.study_instance_uid)
        if cached is not None:
            return cached
        conn.execute(
            _dialect_insert(conn)(Study)
            .values(
                study_instance_uid=item.study_instance_uid,
                first_received_at=item.received_at,
                last_received_at=item.received_at,
            )
            .on_conflict_do_nothing()
        )
        study_id: int = conn.execute(
            select(Study.id).where(Study.study_instance_uid == item.study_instance_uid)
        ).scalar_one()
        learned.append((self._study_ids, item.study_instance_uid, study_id))
        return study_id

    def _series_id(
        self,
        conn: Connection,
        item: ReceivedInstance,
        study_id: int,
        learned: list[tuple[dict[str, int], str, int]],
    ) -> int:
        cached = self._series_ids.get(item.series_instance_uid)
        if cached is not None:
            return cached
        conn.execute(
            _dialect_insert(conn)(Series)
            .values(
                study_id=study_id,
                series_instance_uid=item.series_instance_uid,
                modality=item.modality,
            )
            .on_conflict_do_nothing()
        )
        series_id: int = conn.execute(
            select(Series.id).where(Series.series_instance_uid == item.series_instance_uid)
        ).scalar_one()
        learned.append((self._series_ids, item.series_instance_uid, series_id))
        return series_id

    def record(self, item: ReceivedInstance) -> bool:
        """Record an instance whose file is already in place; True if new."""
        with self.recording(item) as new:
            return new


def instance_path(engine: Engine, sop_instance_uid: str) -> str | None:
    """The spool path of a recorded instance, relative to the data directory, or None."""
    with engine.connect() as conn:
        return conn.scalar(
            select(Instance.file_path).where(Instance.sop_instance_uid == sop_instance_uid)
        )
