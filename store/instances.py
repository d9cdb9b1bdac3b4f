"""Recording received instances: the store's side of the C-STORE hot path.

One short transaction per batch of instances (dicom_node.group_commit gathers the instances of
the associations waiting at once), taken after their files are durable under their final
names, so a committed row always has its file. The transaction does no file work: on SQLite its
write lock is held for well under a millisecond, and associations in several threads and
processes do not queue behind one another's fsyncs. Study and series ids are cached per process
once their rows are committed (rows are never deleted while the node runs), so a typical
instance costs one INSERT, and a batch one UPDATE per study and the commit. On SQLite the
transactions queue on store.write_lock and run on the process's one writing connection.

The PACS may forward the node's own SR and SEG back to it: such an instance is stored as any
other, but does not move its study's ``last_received_at``, or it would re-open the study and
queue a job that reads it again. Only SR and Segmentation instances are looked up.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from store.database import dialect_insert
from store.raw_statement import RawStatement
from store.records import ReceivedInstance
from store.tables import Instance, Output, Series, Study
from store.write_lock import WriterLock

# The SOP classes the node writes: every SR class (PS3.4 B.5, 1.2.840.10008.5.1.4.1.1.88.x)
# and Segmentation Storage.
_SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_SEGMENTATION_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def may_be_own_output(sop_class_uid: str) -> bool:
    """Whether an instance's class is one the node writes (SR or SEG): worth a look-up."""
    return sop_class_uid.startswith(_SR_CLASS_PREFIX) or sop_class_uid == _SEGMENTATION_CLASS


_INSTANCE_COLUMNS = (
    "series_id",
    "sop_instance_uid",
    "sop_class_uid",
    "transfer_syntax_uid",
    "file_path",
    "size_bytes",
    "received_at",
    "calling_ae_title",
    "association_id",
)

# Ids of rows inserted in the open transaction: (cache, UID, id), cached once it commits.
_Learned = list[tuple[dict[str, int], str, int]]


class InstanceIndex:
    """Records instances; thread-safe, one per process and engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._study_ids: dict[str, int] = {}
        self._series_ids: dict[str, int] = {}
        self._lock = threading.Lock()
        self._writer = WriterLock(engine)
        # Compiled once and run on the DBAPI cursor (store.raw_statement): the hot path.
        self._insert_instance = RawStatement(
            dialect_insert(engine)(Instance).on_conflict_do_nothing().returning(Instance.id),
            engine,
            column_keys=_INSTANCE_COLUMNS,
        )
        self._touch_study = RawStatement(
            update(Study)
            .where(Study.id == bindparam("sid"), Study.last_received_at < bindparam("at"))
            .values(last_received_at=bindparam("at")),
            engine,
        )
        self._own_output = RawStatement(
            select(Output.id).where(Output.sop_instance_uid == bindparam("uid")), engine
        )

    def record(self, item: ReceivedInstance) -> bool:
        """Record an instance whose file is in place; True if new, False if already recorded.

        For a new instance the study's ``last_received_at`` moves forward in the same
        transaction, re-opening a study that was ready; not for one of the node's own outputs.
        """
        return self.record_many([item])[0]

    def record_many(self, items: Sequence[ReceivedInstance]) -> list[bool]:
        """Record instances whose files are in place, in one transaction; for each, True if
        new (see :meth:`record`). An instance given twice is new the first time only."""
        learned: _Learned = []
        outcomes: list[bool] = []
        touched: dict[int, dt.datetime] = {}  # study id: its newest instance received here
        with self._writer.transaction() as conn:
            for item in items:
                study_id = self._study_id(conn, item, learned)
                series_id = self._series_id(conn, item, study_id, learned)
                new = (
                    self._insert_instance.first(
                        conn,
                        {
                            "series_id": series_id,
                            "sop_instance_uid": item.sop_instance_uid,
                            "sop_class_uid": item.sop_class_uid,
                            "transfer_syntax_uid": item.transfer_syntax_uid,
                            "file_path": item.file_path,
                            "size_bytes": item.size_bytes,
                            "received_at": item.received_at,
                            "calling_ae_title": item.calling_ae_title,
                            "association_id": item.association_id,
                        },
                    )
                    is not None
                )
                outcomes.append(new)
                if new and not self._is_own_output(conn, item):
                    touched[study_id] = max(
                        touched.get(study_id, item.received_at), item.received_at
                    )
            for study_id, at in touched.items():
                self._touch_study.run(conn, {"sid": study_id, "at": at})
        with self._lock:  # only reached once committed: cache the ids the rows now have
            for cache, uid, row_id in learned:
                cache[uid] = row_id
        return outcomes

    def _is_own_output(self, conn: Connection, item: ReceivedInstance) -> bool:
        if not may_be_own_output(item.sop_class_uid):
            return False
        return self._own_output.first(conn, {"uid": item.sop_instance_uid}) is not None

    def close(self) -> None:
        """Release the writing connection (SQLite); a later record() opens a new one."""
        self._writer.close()

    def _study_id(self, conn: Connection, item: ReceivedInstance, learned: _Learned) -> int:
        return self._row_id(
            conn,
            self._study_ids,
            Study,
            Study.study_instance_uid,
            item.study_instance_uid,
            {"first_received_at": item.received_at, "last_received_at": item.received_at},
            learned,
        )

    def _series_id(
        self, conn: Connection, item: ReceivedInstance, study_id: int, learned: _Learned
    ) -> int:
        return self._row_id(
            conn,
            self._series_ids,
            Series,
            Series.series_instance_uid,
            item.series_instance_uid,
            {"study_id": study_id, "modality": item.modality},
            learned,
        )

    @staticmethod
    def _row_id(
        conn: Connection,
        cache: dict[str, int],
        table: Any,
        uid_column: Any,
        uid: str,
        values: dict[str, Any],
        learned: _Learned,
    ) -> int:
        """The id of the row with this UID (cached), inserting it with ``values`` if new."""
        cached = cache.get(uid)
        if cached is not None:
            return cached
        for learned_cache, learned_uid, learned_id in learned:  # inserted earlier in the batch
            if learned_cache is cache and learned_uid == uid:
                return learned_id
        conn.execute(
            dialect_insert(conn)(table)
            .values({uid_column.key: uid, **values})
            .on_conflict_do_nothing()
        )
        row_id: int = conn.execute(select(table.id).where(uid_column == uid)).scalar_one()
        learned.append((cache, uid, row_id))
        return row_id


def instance_path(engine: Engine, sop_instance_uid: str) -> str | None:
    """The spool path of a recorded instance, relative to the data directory, or None."""
    with engine.connect() as conn:
        return conn.scalar(
            select(Instance.file_path).where(Instance.sop_instance_uid == sop_instance_uid)
        )
