"""The listener against real peers: dcmtk echoscu/storescu and pynetdicom as SCU."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from dicom_node import status
from dicom_node.header import dataset_offset
from dicom_node.incoming import incoming_files
from store.tables import Association, Instance, Job, QuarantinedInstance
from tests.conftest import DCMTK_ENV, require_tool
from tests.dicom_factory import iter_sop_uids, write_ct_study


def storescu(node: Any, files: list[Path], *extra: str, calling: str = "STORESCU") -> str:
    tool = require_tool("storescu")
    result = subprocess.run(
        [
            tool,
            "-aet",
            calling,
            "-aec",
            node.settings.node.ae_title,
            "-nh",
            "-td",
            "60",
            *extra,
            "127.0.0.1",
            str(node.settings.node.port),
            *map(str, files),
        ],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.stdout + result.stderr


def count(node: Any, table: Any) -> int:
    with node.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


def closed_associations(node: Any) -> int:
    with node.engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(Association)
                .where(Association.ended_at.is_not(None))
            )
            or 0
        )


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def in_process_node(data_dir: Path, log_level: str = "INFO", **node_settings: Any) -> Any:
    """A node (not started) on a free port with its own data directory and node settings."""
    from tests.conftest import free_port
    from vlnode.node import Node
    from vlnode.settings import LoggingSettings, NodeSettings, Settings, StoreSettings

    return Node(
        Settings(
            node=NodeSettings(
                port=free_port(), bind_address="127.0.0.1", min_free_disk_mb=16, **node_settings
            ),
            store=StoreSettings(data_dir=data_dir),
            logging=LoggingSettings(level=log_level),
        )
    )


@pytest.mark.peer
def test_echoscu(running_node: Any) -> None:
    tool = require_tool("echoscu")
    result = subprocess.run(
        [tool, "-aec", "VLNODE", "127.0.0.1", str(running_node.settings.node.port)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.peer
def test_storescu_200_instance_study_one_association(running_node: Any, tmp_path: Path) -> None:
    study_uid, files = write_ct_study(tmp_path / "study", (120, 60, 20))
    out = storescu(running_node, files)
    assert count(running_node, Instance) == 200, out
    spool = running_node.settings.store.data_dir / "spool" / study_uid
    stored = sorted(spool.rglob("*.dcm"))
    assert len(stored) == 200
    # Stored exactly as sent: the data set bytes after the file meta are identical.
    original = dcmread(files[0])
    copy = dcmread(spool / original.SeriesInstanceUID / f"{original.SOPInstanceUID}.dcm")
    assert copy.PixelData == original.PixelData
    assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    wait_for(lambda: closed_associations(running_node) == 1)
    with running_node.engine.connect() as conn:
        assoc = conn.execute(select(Association).where(Association.accepted)).one()
    assert (assoc.calling_ae_title, assoc.instances_stored) == ("STORESCU", 200)


@pytest.mark.peer
def test_storescu_concurrent_associations(running_node: Any, tmp_path: Path) -> None:
    _, files = write_ct_study(tmp_path / "study", (50, 50, 50, 50))
    chunks = [files[i::4] for i in range(4)]
    threads = [threading.Thread(target=storescu, args=(running_node, c)) for c in chunks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert count(running_node, Instance) == 200
    # The audit row is closed just after the release response reaches the sender.
    wait_for(lambda: closed_associations(running_node) == 4)
    with running_node.engine.connect() as conn:
        stored = conn.scalars(select(Association.instances_stored)).all()
    assert sorted(stored) == [50, 50, 50, 50]
    wait_for(lambda: count(running_node, Job) == 1)  # one study, one job


@pytest.mark.peer
def test_compressed_series_stored_as_sent(running_node: Any, shared_data: Path) -> None:
    folder = shared_data / "dicom-series" / "generic" / "compressed_j2k"
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".gz"))
    assert files
    # storescu has no JPEG 2000 codec: propose the files' own syntax (NOTES.md).
    storescu(running_node, files, "-xv")
    assert count(running_node, Instance) == len(set(iter_sop_uids(files)))
    with running_node.engine.connect() as conn:
        syntaxes = set(conn.scalars(select(Instance.transfer_syntax_uid)))
    assert syntaxes == {"1.2.840.10008.1.2.4.90"}
    for path in files:
        sent = dcmread(path)
        kept = next(running_node.settings.store.data_dir.rglob(f"{sent.SOPInstanceUID}.dcm"))
        assert dcmread(kept).PixelData == sent.PixelData  # still the JPEG 2000 codestream


@pytest.mark.peer
def test_rejected_calling_ae_is_recorded(tmp_path: Path) -> None:
    from vlnode.settings import AllowedCaller

    node = in_process_node(tmp_path / "data", allowed_callers=(AllowedCaller(ae_title="PACS"),))
    node.start()
    try:
        tool = require_tool("echoscu")
        result = subprocess.run(
            [tool, "-aet", "INTRUDER", "-aec", "VLNODE", "127.0.0.1", str(node.settings.node.port)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode != 0
        assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
        ok = subprocess.run(
            [tool, "-aet", "PACS", "-aec", "VLNODE", "127.0.0.1", str(node.settings.node.port)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ok.returncode == 0
        with node.engine.connect() as conn:
            rows = conn.execute(
                select(
                    Association.calling_ae_title, Association.accepted, Association.reason
                ).order_by(Association.id)
            ).all()
        assert rows[0][:2] == ("INTRUDER", False)
        assert "allowed_callers" in rows[0][2]
        assert rows[1][:2] == ("PACS", True)
    finally:
        node.stop()


def _send_raw(port: int, dataset_bytes: bytes, sop_uid: str) -> int:
    """Send an arbitrary byte string as a C-STORE data set with pynetdicom as the SCU."""
    from io import BytesIO

    from pynetdicom.dimse_primitives import C_STORE

    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="VLNODE")
    assert assoc.is_established
    try:
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = CTImageStorage
        req.AffectedSOPInstanceUID = sop_uid
        req.Priority = 2
        req.DataSet = BytesIO(dataset_bytes)
        context = assoc.accepted_contexts[0]
        assoc._reactor_checkpoint.clear()
        try:
            assoc.dimse.send_msg(req, context.context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert rsp is not None
        return int(rsp.Status)
    finally:
        assoc.release()
        ae.shutdown()


def _dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a Part 10 file, without preamble and file meta."""
    from pydicom.filereader import read_file_meta_info

    meta_length = 132 + 12 + int(read_file_meta_info(path).FileMetaInformationGroupLength)
    return path.read_bytes()[meta_length:]


@pytest.mark.peer
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_instance_is_quarantined_and_node_keeps_serving(
    running_node: Any, tmp_path: Path, damage: str
) -> None:
    _, files = write_ct_study(tmp_path / "study", (2,))
    sop_uid = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    body = _dataset_bytes(files[0])
    # Truncated: cut inside the pixel data, as when a sender dies mid-instance.
    # Garbage: an element that claims 32767 bytes and has 5.
    sent = body[: len(body) - 1000] if damage == "truncated" else b"\x08\x00\x16\x00UI\xff\x7f1.2.3"
    code = _send_raw(running_node.settings.node.port, sent, sop_uid)
    assert code == status.ERROR_CANNOT_UNDERSTAND
    assert count(running_node, QuarantinedInstance) == 1
    assert count(running_node, Instance) == 0  # nothing half-written in the spool
    quarantined = list((running_node.settings.store.data_dir / "quarantine").glob("*.dcm"))
    # Kept as received, in a Part 10 file whose meta names the request's UIDs.
    assert len(quarantined) == 1
    kept = quarantined[0].read_bytes()
    assert kept[dataset_offset(kept) :] == sent
    reason = quarantined[0].with_suffix(".reason.txt").read_text()
    assert "truncated" in reason
    # Still serving: the next instance is stored.
    storescu(running_node, [files[1]])
    assert count(running_node, Instance) == 1


@pytest.mark.peer
def test_duplicate_instance_stored_once(running_node: Any, tmp_path: Path) -> None:
    _, files = write_ct_study(tmp_path / "study", (3,))
    storescu(running_node, files)
    out = storescu(running_node, files)
    assert "Received Store Response (Success)" in out or out == "" or "Success" in out
    assert count(running_node, Instance) == 3
    wait_for(lambda: closed_associations(running_node) == 2)
    with running_node.engine.connect() as conn:
        dup = conn.scalars(
            select(Association.instances_duplicate).order_by(Association.id.desc())
        ).first()
    assert dup == 3
    assert len(list(running_node.settings.store.data_dir.rglob("*.dcm"))) == 3


@pytest.mark.peer
def test_pynetdicom_scu_and_stable_study_job(running_node: Any, tmp_path: Path) -> None:
    study_uid, files = write_ct_study(tmp_path / "study", (5,))
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", running_node.settings.node.port, ae_title="VLNODE")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == status.SUCCESS
    for path in files:
        assert assoc.send_c_store(dcmread(path)).Status == status.SUCCESS
    assoc.release()
    ae.shutdown()
    wait_for(lambda: count(running_node, Job) == 1)
    # A later instance re-opens the study: a second job after the next quiet period.
    _, extra_files = write_ct_study(tmp_path / "more", (1,))
    late = dcmread(extra_files[0])
    late.StudyInstanceUID = study_uid
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path)
    storescu(running_node, [late_path])
    wait_for(lambda: count(running_node, Job) == 2)
    time.sleep(1.5)
    assert count(running_node, Job) == 2
    assert count(running_node, Instance) == 6


@pytest.mark.peer
def test_pynetdicom_path_stores_the_same_files_as_the_direct_path(
    running_node: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # At DEBUG level pynetdicom's logging handlers watch every PDU, so each C-STORE takes
    # pynetdicom's own path instead of dicom_node.direct_store: both must store the same bytes.
    from dicom_node.direct_store import DirectStore

    served_directly: list[object] = []
    finish = DirectStore._finish

    def counting_finish(self: DirectStore, message: Any, dataset: Any) -> None:
        served_directly.append(message)
        finish(self, message, dataset)

    monkeypatch.setattr(DirectStore, "_finish", counting_finish)
    _, files = write_ct_study(tmp_path / "study", (1, 2))
    storescu(running_node, files)
    assert count(running_node, Instance) == 3
    assert len(served_directly) == 3
    # Built after the first node: pynetdicom's logging switch is per process.
    debug_node = in_process_node(tmp_path / "debug-data", log_level="DEBUG")
    debug_node.start()
    try:
        storescu(debug_node, files)
        assert count(debug_node, Instance) == 3
    finally:
        debug_node.stop()
    assert len(served_directly) == 3

    def stored(data_dir: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (data_dir / "spool").rglob("*.dcm")}

    direct = stored(running_node.settings.store.data_dir)
    assert len(direct) == 3
    assert direct == stored(tmp_path / "debug-data")


def _begin_an_instance(node: Any) -> tuple[AE, Any]:
    """Associate and send a C-STORE's command and the first bytes of its data set, no more.

    Returns once the node has begun writing the data set into the spool's incoming folder.
    """
    from pynetdicom.pdu_primitives import P_DATA

    from tests.dicom_node.test_direct_store import store_command

    incoming = node.settings.store.data_dir / "spool" / ".incoming"
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.settings.node.port, ae_title="VLNODE")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    pdata = P_DATA()
    pdata.presentation_data_value_list = [
        [context_id, b"\x03" + store_command(1, "1.2.3.4")],
        [context_id, b"\x00" + b"\x08\x00\x16\x00UI\x1a\x00" + b"1" * 20],
    ]
    assoc.dul.send_pdu(pdata)
    wait_for(lambda: bool(incoming_files(incoming)))
    return ae, assoc


@pytest.mark.peer
def test_sender_aborting_mid_instance_leaves_nothing_behind(
    running_node: Any, tmp_path: Path
) -> None:
    ae, assoc = _begin_an_instance(running_node)
    assoc.abort()  # the sender gives up
    ae.shutdown()
    incoming = running_node.settings.store.data_dir / "spool" / ".incoming"
    wait_for(lambda: not incoming_files(incoming))
    wait_for(lambda: closed_associations(running_node) == 1)
    assert count(running_node, Instance) == 0
    # Still serving.
    _, files = write_ct_study(tmp_path / "study", (1,))
    storescu(running_node, files)
    assert count(running_node, Instance) == 1


@pytest.mark.peer
def test_sender_stalling_mid_instance_is_cut_off_after_the_network_timeout(
    tmp_path: Path,
) -> None:
    # The rest of a data set is read without select (dicom_node.pynetdicom_tuning): a sender
    # that stops sending must still be cut off, and leave nothing behind.
    node = in_process_node(tmp_path / "vlnode-data", network_timeout=1)
    node.start()
    try:
        ae, assoc = _begin_an_instance(node)
        # ... and nothing more: the node ends the association on its own.
        incoming = node.settings.store.data_dir / "spool" / ".incoming"
        wait_for(lambda: not assoc.is_established, timeout=20)
        wait_for(lambda: not incoming_files(incoming))
        wait_for(lambda: closed_associations(node) == 1)
        ae.shutdown()
        assert count(node, Instance) == 0
    finally:
        node.stop()


@pytest.mark.peer
def test_association_limit_rejects_one_more_and_is_audited(tmp_path: Path) -> None:
    node = in_process_node(tmp_path / "vlnode-data", max_associations=2)
    node.start()
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    try:
        port = node.settings.node.port
        held = [ae.associate("127.0.0.1", port, ae_title="VLNODE") for _ in range(2)]
        assert all(assoc.is_established for assoc in held)
        extra = ae.associate("127.0.0.1", port, ae_title="VLNODE")
        assert extra.is_rejected
        rejection = extra.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (2, 3, 2)
        for assoc in held:
            assoc.release()
        later = ae.associate("127.0.0.1", port, ae_title="VLNODE")
        assert later.is_established
        later.release()
        with node.engine.connect() as conn:
            rows = conn.execute(
                select(Association.accepted, Association.reason).order_by(Association.id)
            ).all()
        assert [accepted for accepted, _ in rows] == [True, True, False, True]
        assert "2 associations already active (node.max_associations = 2)" in rows[2][1]
    finally:
        ae.shutdown()
        node.stop()
