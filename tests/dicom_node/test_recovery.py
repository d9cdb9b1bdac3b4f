"""Rows lost after an unclean stop are recorded again from the spool at the next start."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, delete, func, select

from dicom_node import status
from dicom_node.incoming import IncomingFile
from dicom_node.receiver import AssociationTally, StoreService
from dicom_node.recovery import RunMarker, record_unrecorded_files
from dicom_node.spool import Spool
from store.database import make_engine, upgrade_schema
from store.tables import Instance
from tests.conftest import free_port
from tests.dicom_factory import ct_slice
from vlnode.node import Node
from vlnode.settings import NodeSettings, Settings, StoreSettings


def received_file(spool: Spool, ds: Dataset) -> IncomingFile:
    """The file pynetdicom's chunked reception leaves for the handler: Part 10, in .incoming.

    The caller holds it until the handler is done, as pynetdicom does: a dropped IncomingFile
    removes its file when the garbage collector gets to it (it refers to itself).
    """
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    incoming = spool.new_incoming_file()
    content = buffer.getvalue()
    for offset in range(0, len(content), 4096):  # fragment by fragment, as pynetdicom does
        incoming.write(content[offset : offset + 4096])
        incoming.flush()
    incoming.close()
    return incoming


def receive(service: StoreService, count: int) -> list[tuple[str, Dataset]]:
    study, series = generate_uid(), generate_uid()
    sent = []
    for index in range(count):
        ds = ct_slice(study, series, index)
        incoming = received_file(service.spool, ds)
        result = service.store(
            Path(incoming.name),
            ExplicitVRLittleEndian,
            ds.SOPClassUID,
            ds.SOPInstanceUID,
            AssociationTally(None, "PACS"),
        )
        assert result == status.SUCCESS
        sent.append((str(ds.SOPInstanceUID), ds))
    return sent


def rows(engine: Engine) -> dict[str, tuple[str, int, str]]:
    with engine.connect() as conn:
        return {
            r.sop_instance_uid: (r.file_path, r.size_bytes, r.calling_ae_title)
            for r in conn.execute(select(Instance))
        }


def lose_rows(engine: Engine, sop_uids: list[str]) -> None:
    """What a power loss can do on SQLite with synchronous=NORMAL: the last commits vanish."""
    with engine.begin() as conn:
        conn.execute(delete(Instance).where(Instance.sop_instance_uid.in_(sop_uids)))


def test_unrecorded_files_are_recorded_with_their_own_identifiers(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vlnode.db'}")
    upgrade_schema(engine)
    spool = Spool(tmp_path, 0)
    sent = receive(StoreService(spool, engine), 4)
    before = rows(engine)
    lost = [sop for sop, _ in sent[2:]]
    lose_rows(engine, lost)
    (tmp_path / "spool" / "not-dicom.dcm").write_bytes(b"garbage")

    report = record_unrecorded_files(spool, engine)

    assert report.recorded == 2
    assert report.unreadable == ["spool/not-dicom.dcm"]
    recovered = rows(engine)
    # Same path and size as when received; the calling AE comes from the file meta's Source
    # Application Entity Title, which these files (written by pydicom, not received) lack.
    assert {sop: row[:2] for sop, row in recovered.items()} == {
        sop: row[:2] for sop, row in before.items()
    }
    assert [recovered[sop][2] for sop in lost] == ["", ""]
    assert record_unrecorded_files(spool, engine).recorded == 0
    engine.dispose()


def test_torn_file_is_quarantined_not_recorded(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vlnode.db'}")
    upgrade_schema(engine)
    spool = Spool(tmp_path, 0)
    assert spool.sealed  # the test machine's file system keeps extended attributes
    [(sop, _)] = receive(StoreService(spool, engine), 1)
    [(path, _, _)] = rows(engine).values()
    lose_rows(engine, [sop])
    # What a power loss before the flush can leave: the name, part of the data.
    stored = tmp_path / path
    content = stored.read_bytes()
    with open(stored, "r+b") as file:
        file.truncate(len(content) - 4096)

    report = record_unrecorded_files(spool, engine)

    assert (report.recorded, report.torn) == (0, [path])
    assert not stored.exists() and sop not in rows(engine)
    [reason] = (tmp_path / "quarantine").glob("*.reason.txt")
    assert "torn" in reason.read_text()
    engine.dispose()


def test_portable_spool_stores_without_seals(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vlnode.db'}")
    upgrade_schema(engine)
    spool = Spool(tmp_path, 0)
    spool.sealed = False  # as on a file system without extended attributes
    sent = receive(StoreService(spool, engine), 2)
    assert set(rows(engine)) == {sop for sop, _ in sent}
    assert not spool.files_being_received()
    engine.dispose()


def test_resent_instance_whose_row_was_lost_is_stored_again(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vlnode.db'}")
    upgrade_schema(engine)
    service = StoreService(Spool(tmp_path, 0), engine)
    [(sop, ds)] = receive(service, 1)
    lose_rows(engine, [sop])
    tally = AssociationTally(None, "PACS")
    # The file is there with no row: the re-sent copy takes its place and is recorded as new.
    resent_file = received_file(service.spool, ds)
    resent = Path(resent_file.name)
    result = service.store(resent, ExplicitVRLittleEndian, "", sop, tally)
    assert (result, tally.stored, tally.duplicate) == (status.SUCCESS, 1, 0)
    assert sop in rows(engine)
    assert not resent.exists()
    # Sent once more: a duplicate, stored once, and its temporary file is gone.
    again_file = received_file(service.spool, ds)
    again = Path(again_file.name)
    service.store(again, ExplicitVRLittleEndian, "", sop, tally)
    assert tally.duplicate == 1
    assert not again.exists()
    engine.dispose()


def test_node_checks_the_spool_only_after_an_unclean_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "vlnode-data"
    settings = Settings(
        node=NodeSettings(port=free_port(), bind_address="127.0.0.1", min_free_disk_mb=0),
        store=StoreSettings(data_dir=data_dir),
    )
    node = Node(settings)
    node.start()
    marker = RunMarker(data_dir)
    assert marker.previous_run_was_unclean()  # the marker exists while the node runs
    sent = receive(node.listener.service, 3)
    node.stop()
    assert not marker.previous_run_was_unclean()

    engine = make_engine(settings.database_url)
    lose_rows(engine, [sop for sop, _ in sent])
    # After a clean stop nothing is walked (a lost row is then impossible).
    clean = Node(settings)
    clean.start()
    clean.stop()
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(Instance)) == 0

    marker.set()  # as a power loss would leave it
    after_crash = Node(settings)
    after_crash.start()
    after_crash.stop()
    assert set(rows(engine)) == {sop for sop, _ in sent}
    engine.dispose()
