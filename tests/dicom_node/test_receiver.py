"""The C-STORE handler's answers when writing the received data set failed."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node import status
from dicom_node.receiver import AssociationTally, StoreService
from dicom_node.spool import Spool
from store.database import make_engine, upgrade_schema
from store.summary import summarise


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (errno.ENOSPC, status.REFUSED_OUT_OF_RESOURCES),
        (errno.EIO, status.PROCESSING_FAILURE),
    ],
)
def test_failed_write_is_answered_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int, expected: int
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vlnode.db'}")
    upgrade_schema(engine)
    service = StoreService(Spool(tmp_path, 0), engine)
    incoming = service.spool.new_incoming_file()
    incoming.write(b"\0" * 128 + b"DICM")

    def failing_write(_fd: int, _data: Any) -> int:
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr("dicom_node.incoming.os.write", failing_write)
    incoming.write(b"more of the data set")  # pynetdicom's network thread must not see this
    incoming.flush()
    monkeypatch.undo()
    assert isinstance(incoming.failure, OSError) and incoming.failure.errno == error
    incoming.close()

    tally = AssociationTally(None, "PACS")
    answer = service.store(
        Path(incoming.name),
        ExplicitVRLittleEndian,
        CTImageStorage,
        "1.2.3.4",
        tally,
        write_failure=incoming.failure,
    )
    assert not isinstance(answer, int) and answer.Status == expected
    assert os.strerror(error)[:20] in str(answer.ErrorComment)
    assert tally.failed == 1
    assert summarise(engine).instances == 0
    assert not list((tmp_path / "quarantine").iterdir())  # not the sender's fault
    engine.dispose()
