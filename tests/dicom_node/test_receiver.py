"""The C-STORE handler's answers when writing the received data set failed."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from dicom_node import status
from dicom_node.errors import OutOfResourcesError
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


def test_spool_refuses_under_its_disk_floor_and_looks_again_when_near_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = {"bytes": 10 * 2**30}
    looks: list[int] = []

    def disk_usage(_path: Any) -> Any:
        looks.append(free["bytes"])
        return type("Usage", (), {"free": free["bytes"]})()

    monkeypatch.setattr("dicom_node.spool.shutil.disk_usage", disk_usage)
    spool = Spool(tmp_path, min_free_bytes=2**30)
    spool.check_free_space()
    spool.check_free_space()  # far above the floor: not looked at again within the second
    assert len(looks) == 1
    spool._free_space_fine_until = 0.0  # the second has passed
    free["bytes"] = 2**30 + 2**20  # just above the floor: looked at every time
    spool.check_free_space()
    spool.check_free_space()
    assert len(looks) == 3
    free["bytes"] = 2**30 - 1
    with pytest.raises(OutOfResourcesError, match="under the floor of 1024 MiB"):
        spool.check_free_space()
    assert OutOfResourcesError.dimse_status == status.REFUSED_OUT_OF_RESOURCES
