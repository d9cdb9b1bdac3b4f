"""The C-STORE handler: from received bytes to a durable file and a committed row.

Success is returned only after both are durable (see DESIGN.md, "nothing lost"); every
failure is a named DIMSE status, and unparsable data is quarantined with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID
from sqlalchemy import Engine

from dicom_node import status
from dicom_node.errors import InvalidInstanceError, ReceiveError, SopMismatchError, StorageError
from dicom_node.header import UID_PATTERN, InstanceIdentifiers, read_identifiers
from dicom_node.spool import Spool
from store import ingest
from store.instances import InstanceIndex
from store.records import ReceivedInstance
from store.tables import utcnow

log = logging.getLogger(__name__)

IMPLEMENTATION_VERSION_NAME = "VLNODE_010"


@dataclass
class AssociationTally:
    """Per-association counts, written to the audit row when the association ends."""

    association_id: int | None
    calling_ae_title: str
    stored: int = 0
    duplicate: int = 0
    failed: int = 0


def part10_header(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> bytes:
    """Preamble and File Meta Information (PS3.10 7.1) for a data set stored as received."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    meta.SourceApplicationEntityTitle = source_ae
    buffer = BytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    return buffer.getvalue()


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

    def store(
        self,
        encoded: memoryview,
        transfer_syntax: str,
        requested_sop_class: str,
        requested_sop_instance: str,
        tally: AssociationTally,
    ) -> int | Dataset:
        """Store one data set; return the DIMSE status (a Dataset when a comment helps)."""
        try:
            self.spool.check_free_space()
            ids = read_identifiers(encoded, transfer_syntax)
            ids = _reconcile_with_request(ids, requested_sop_class, requested_sop_instance)
            is_new = self._store_durably(ids, encoded, transfer_syntax, tally)
        except ReceiveError as exc:
            tally.failed += 1
            return self._refuse(exc, encoded, transfer_syntax, requested_sop_instance, tally)
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
        encoded: memoryview,
        transfer_syntax: str,
        tally: AssociationTally,
    ) -> bool:
        relative = self.spool.relative_path(ids)
        header = part10_header(
            ids.sop_class_uid, ids.sop_instance_uid, transfer_syntax, tally.calling_ae_title
        )
        pending = self.spool.write_pending(relative, [header, encoded])
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
        # The rename happens inside the row's transaction: a committed row always has its
        # file, and a duplicate leaves the file already stored untouched.
        try:
            with self.index.recording(item) as is_new:
                if is_new:
                    pending.commit()
                else:
                    pending.discard()
        except StorageError:
            raise
        except Exception as exc:
            pending.discard()
            raise StorageError(f"cannot record the instance in the store: {exc}") from exc
        return is_new

    def _refuse(
        self,
        exc: ReceiveError,
        encoded: memoryview,
        transfer_syntax: str,
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
            self._quarantine(encoded, transfer_syntax, requested_sop_instance, reason, tally)
        return _status_with_comment(exc.dimse_status, reason)

    def _quarantine(
        self,
        encoded: memoryview,
        transfer_syntax: str,
        requested_sop_instance: str,
        reason: str,
        tally: AssociationTally,
    ) -> None:
        try:
            path = self.spool.quarantine(encoded, reason, requested_sop_instance)
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


def event_encoded_dataset(event: Any) -> memoryview:
    """The received data set's bytes, without a copy."""
    buffer: BytesIO = event.request.DataSet
    return buffer.getbuffer()
