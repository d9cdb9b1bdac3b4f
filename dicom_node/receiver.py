"""The C-STORE handler: from a received file to a durable instance and a committed row.

Success is returned only after both are durable (see DESIGN.md, "nothing lost"); every
failure is a named DIMSE status, and unparsable data is quarantined with its reason.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import Engine

from dicom_node import status
from dicom_node.errors import (
    InvalidInstanceError,
    OutOfResourcesError,
    ReceiveError,
    SopMismatchError,
    StorageError,
)
from dicom_node.group_commit import GroupCommit
from dicom_node.header import (
    UID_PATTERN,
    InstanceIdentifiers,
    read_file_identifiers,
    read_identifiers,
)
from dicom_node.spool import Spool
from store import ingest
from store.instances import InstanceIndex, instance_path
from store.records import ReceivedInstance
from store.tables import utcnow

log = logging.getLogger(__name__)


@dataclass
class AssociationTally:
    """Per-association counts, written to the audit row when the association ends."""

    association_id: int | None
    calling_ae_title: str
    stored: int = 0
    duplicate: int = 0
    failed: int = 0


class StoreService:
    """Stores each received instance in the spool and the store.

    Parameters
    ----------
    spool
        Durable file writer.
    engine
        The store's database engine.
    """

    def __init__(self, spool: Spool, engine: Engine) -> None:
        self.spool = spool
        self.engine = engine
        self.index = InstanceIndex(engine)
        self.commits = GroupCommit(spool.make_durable, self.index.record_many)

    def close(self) -> None:
        """Release the database connection the store keeps for writing (at shutdown)."""
        self.index.close()

    def store(
        self,
        received: Path,
        transfer_syntax: str,
        requested_sop_class: str,
        requested_sop_instance: str,
        tally: AssociationTally,
        write_failure: OSError | None = None,
        dataset: memoryview | None = None,
    ) -> int | Dataset:
        """Store one completely received Part 10 file; return the DIMSE status.

        ``received`` is the temporary file the data set was written to as it arrived (see
        dicom_node.incoming); it is given its final name, or quarantined, or dropped.
        ``write_failure`` is the error that stopped writing it, if one did. ``dataset``, if
        given, is the data set the file holds after its File Meta Information, still in
        memory: its identifiers are read from there.
        """
        try:
            if write_failure is not None:
                raise _write_failure_error(write_failure)
            self.spool.check_free_space()
            if dataset is not None:
                ids = read_identifiers(dataset, transfer_syntax)
            else:
                ids = read_file_identifiers(received, transfer_syntax)
            ids = _reconcile_with_request(ids, requested_sop_class, requested_sop_instance)
            is_new = self._store_durably(ids, received, transfer_syntax, tally)
        except ReceiveError as exc:
            tally.failed += 1
            return self._refuse(exc, received, requested_sop_instance, tally)
        except Exception as exc:  # never let one instance take the association down
            tally.failed += 1
            log.exception("unexpected error storing SOP Instance %s", requested_sop_instance)
            return _status_with_comment(status.PROCESSING_FAILURE, f"internal error: {exc}")
        if is_new:
            tally.stored += 1
        else:
            tally.duplicate += 1
            log.info("duplicate SOP Instance %s stored once", ids.sop_instance_uid)
        return status.SUCCESS

    def _store_durably(
        self,
        ids: InstanceIdentifiers,
        received: Path,
        transfer_syntax: str,
        tally: AssociationTally,
    ) -> bool:
        relative = self.spool.relative_path(ids)
        pending = self.spool.pending_from_incoming(received, relative)
        item = ReceivedInstance(
            study_instance_uid=ids.study_instance_uid,
            series_instance_uid=ids.series_instance_uid,
            sop_instance_uid=ids.sop_instance_uid,
            sop_class_uid=ids.sop_class_uid,
            transfer_syntax_uid=transfer_syntax,
            modality=ids.modality,
            file_path=str(relative),
            size_bytes=pending.size,
            received_at=utcnow(),
            calling_ae_title=tally.calling_ae_title,
            association_id=tally.association_id,
        )
        # The file is durable under its final name before the row is committed: a committed
        # row always has its file. A row lost after that (SQLite does not fsync each commit)
        # is recovered from the file at the next start (dicom_node.recovery). Both steps are
        # shared with the instances other associations are storing at the same moment.
        placed = pending.place()
        if not placed:
            if instance_path(self.engine, ids.sop_instance_uid) is not None:
                pending.discard()  # a re-sent instance: the stored file stays as it was
                return False
            # A file from a store that never got its row (it failed, or its row was lost):
            # this complete copy takes its place.
            pending.replace()
        # On failure the file stays: a re-send replaces it, and the next start records it if not.
        is_new = self.commits.commit(item, pending.final.parent)
        if not is_new and placed:
            # Recorded under another study or series path: keep the first one only.
            recorded = instance_path(self.engine, ids.sop_instance_uid)
            if recorded != str(relative):
                self.spool.remove(relative)
        return is_new

    def _refuse(
        self,
        exc: ReceiveError,
        received: Path,
        requested_sop_instance: str,
        tally: AssociationTally,
    ) -> Dataset:
        reason = str(exc)
        log.warning(
            "refused SOP Instance %s from %s: %s (status 0x%04X)",
            requested_sop_instance,
            tally.calling_ae_title,
            reason,
            exc.dimse_status,
        )
        if exc.quarantine:
            self._quarantine(received, requested_sop_instance, reason, tally)
        return _status_with_comment(exc.dimse_status, reason)

    def _quarantine(
        self,
        received: Path,
        requested_sop_instance: str,
        reason: str,
        tally: AssociationTally,
    ) -> None:
        try:
            path = self.spool.quarantine(received, reason, requested_sop_instance)
            ingest.record_quarantined(
                self.engine,
                file_path=str(path),
                reason=reason,
                sop_instance_uid=requested_sop_instance or None,
                calling_ae_title=tally.calling_ae_title,
                association_id=tally.association_id,
            )
        except Exception:
            log.exception("could not quarantine data for SOP Instance %s", requested_sop_instance)


def _write_failure_error(failure: OSError) -> ReceiveError:
    if failure.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutOfResourcesError(f"the spool's disk is full: {failure.strerror}")
    return StorageError(f"cannot write the received data set: {failure.strerror or failure}")


def _reconcile_with_request(
    ids: InstanceIdentifiers, sop_class: str, sop_instance: str
) -> InstanceIdentifiers:
    """Check the data set's SOP UIDs against the request's; take the request's when absent."""
    if ids.sop_instance_uid and sop_instance and ids.sop_instance_uid != sop_instance:
        raise SopMismatchError(
            f"data set SOPInstanceUID {ids.sop_instance_uid} differs from the request's "
            f"Affected SOP Instance UID {sop_instance}"
        )
    if ids.sop_class_uid and sop_class and ids.sop_class_uid != sop_class:
        raise SopMismatchError(
            f"data set SOPClassUID {ids.sop_class_uid} differs from the request's "
            f"Affected SOP Class UID {sop_class}"
        )
    filled = replace(
        ids,
        sop_class_uid=ids.sop_class_uid or sop_class,
        sop_instance_uid=ids.sop_instance_uid or sop_instance,
    )
    for name, value in (
        ("SOP Class", filled.sop_class_uid),
        ("SOP Instance", filled.sop_instance_uid),
    ):
        if not value or len(value) > 64 or not UID_PATTERN.match(value):
            raise InvalidInstanceError(f"no valid {name} UID in the data set or the request")
    return filled


def _status_with_comment(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    # Error Comment is LO: at most 64 characters (PS3.7 C.4).
    ds.ErrorComment = comment.replace("\\", "/")[:64]
    return ds
