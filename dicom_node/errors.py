"""The receiving side's exceptions, each mapped to one DIMSE status.

::

    ReceiveError                      (base; PROCESSING_FAILURE)
    ├── InvalidInstanceError          the data set cannot be parsed or lacks required UIDs
    │                                 (ERROR_CANNOT_UNDERSTAND; the bytes are quarantined)
    ├── SopMismatchError              the data set's SOP UIDs differ from the request's
    │                                 (ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS; quarantined)
    ├── OutOfResourcesError           free disk space under the configured floor
    │                                 (REFUSED_OUT_OF_RESOURCES)
    └── StorageError                  writing the file or committing its row failed
                                      (PROCESSING_FAILURE; nothing half-written is left)
"""

from __future__ import annotations

from dicom_node import status


class ReceiveError(Exception):
    """An instance could not be stored; ``dimse_status`` is what the sender is told."""

    dimse_status = status.PROCESSING_FAILURE
    quarantine = False


class InvalidInstanceError(ReceiveError):
    dimse_status = status.ERROR_CANNOT_UNDERSTAND
    quarantine = True


class SopMismatchError(ReceiveError):
    dimse_status = status.ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS
    quarantine = True


class OutOfResourcesError(ReceiveError):
    dimse_status = status.REFUSED_OUT_OF_RESOURCES


class StorageError(ReceiveError):
    dimse_status = status.PROCESSING_FAILURE
