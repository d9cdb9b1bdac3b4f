"""After an unclean stop: record the spool files whose row did not survive.

The C-STORE path makes each file durable under its final name (dicom_node.spool) and then
commits its row. On SQLite that commit is not fsynced (WAL with ``synchronous=NORMAL``: one
fsync per instance fewer, and no fsync while holding the database's write lock), so a power
loss can take the last rows back while their files stay. The spool is therefore the record of
what was acknowledged, and the store is brought back level with it at the next start.

A process crash loses nothing (the operating system still writes the log out); the walk only
runs when the previous run did not stop cleanly, which a marker file in the data directory
tells, and it reads only the files that have no row.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from sqlalchemy import Engine, select

from dicom_node.errors import ReceiveError
from dicom_node.header import read_file_identifiers
from dicom_node.seal import has_seal, is_sealed_and_intact
from dicom_node.spool import Spool, fsync_dir
from store.instances import InstanceIndex
from store.records import ReceivedInstance
from store.tables import Instance

log = logging.getLogger(__name__)

RUNNING_MARKER = "node.running"


@dataclass(frozen=True)
class RecoveryReport:
    recorded: int
    unreadable: list[str]
    torn: list[str]  # never acknowledged: moved to quarantine, the sender sends them again


class RunMarker:
    """A file that exists while the node runs: found at start, the last run did not stop."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RUNNING_MARKER

    def previous_run_was_unclean(self) -> bool:
        return self.path.exists()

    def set(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.path.parent)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        fsync_dir(self.path.parent)


def record_unrecorded_files(spool: Spool, engine: Engine) -> RecoveryReport:
    """Record every spool file that has no instance row; return what was done."""
    with engine.connect() as conn:
        recorded_paths = set(conn.scalars(select(Instance.file_path)))
    index = InstanceIndex(engine)
    recorded = 0
    unreadable: list[str] = []
    torn: list[str] = []
    for path in sorted(spool.root.rglob("*.dcm")):
        relative = path.relative_to(spool.data_dir)
        if str(relative) in recorded_paths:
            continue
        if has_seal(path) and not is_sealed_and_intact(path):
            reason = "torn by an unclean stop before it was acknowledged (bytes do not match seal)"
            log.warning("spool file %s: %s; moved to quarantine", relative, reason)
            spool.quarantine(path, reason, path.stem)
            torn.append(str(relative))
            continue
        try:
            item = _instance_from_file(path, relative)
        except (OSError, ValueError, InvalidDicomError, ReceiveError) as exc:
            log.error("spool file %s has no row and cannot be read: %s", relative, exc)
            unreadable.append(str(relative))
            continue
        if index.record(item):
            recorded += 1
            log.warning("recorded SOP Instance %s from the spool", item.sop_instance_uid)
    return RecoveryReport(recorded, unreadable, torn)


def _instance_from_file(path: Path, relative: Path) -> ReceivedInstance:
    meta = read_file_meta_info(path)
    transfer_syntax = str(meta.TransferSyntaxUID)
    ids = read_file_identifiers(path, transfer_syntax)
    stat = path.stat()
    return ReceivedInstance(
        study_instance_uid=ids.study_instance_uid,
        series_instance_uid=ids.series_instance_uid,
        sop_instance_uid=ids.sop_instance_uid or str(meta.MediaStorageSOPInstanceUID),
        sop_class_uid=ids.sop_class_uid or str(meta.MediaStorageSOPClassUID),
        transfer_syntax_uid=transfer_syntax,
        modality=ids.modality,
        file_path=str(relative),
        size_bytes=stat.st_size,
        received_at=dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC),
        calling_ae_title=str(meta.get("SourceApplicationEntityTitle", "")).strip(),
        association_id=None,
    )
