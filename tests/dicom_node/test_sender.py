"""The sender against real peers: dcmtk's storescp, and pynetdicom AEs that refuse or warn."""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine

from dicom_node.sender import Sender, retry_delay
from store.database import make_engine, upgrade_schema
from store.instances import InstanceIndex
from store.jobs import claim_next_job, queue_jobs_for_quiet_studies
from store.outputs import (
    DeliveryLine,
    DeliveryState,
    OutputRecord,
    complete_job,
    list_deliveries,
    resend,
)
from store.records import ReceivedInstance
from tests.conftest import DCMTK_ENV, free_port, require_tool
from vlnode.settings import DeliverySettings, Destination, NodeSettings, Settings, StoreSettings

BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
STUDY = "1.2.826.0.1.3680043.8.498.1"
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def settings_for(data_dir: Path, port: int, ae_title: str = "DEST", **delivery: Any) -> Settings:
    retries = {
        "first_retry_seconds": 0.1,
        "max_retry_seconds": 0.2,
        "max_attempts": 20,
        "poll_interval_seconds": 0.05,
        "timeout_seconds": 2.0,
        **delivery,
    }
    return Settings(
        node=NodeSettings(ae_title="VLNODE"),
        store=StoreSettings(data_dir=data_dir),
        delivery=DeliverySettings(**retries),
        destinations=(Destination(name="pacs", ae_title=ae_title, host="127.0.0.1", port=port),),
    )


def write_sr(path: Path, sop_instance_uid: str) -> str:
    """A small Basic Text SR (no patient data); returns the file's SHA-256."""
    ds = Dataset()
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = sop_instance_uid + ".1"
    ds.Modality = "SR"
    ds.PatientName = "Test^Sender"
    ds.PatientID = "T1"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "vlnode-data"


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{data_dir / 'vlnode.db'}")
    upgrade_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def queued_output(engine: Engine, data_dir: Path) -> str:
    """A study read by a worker: its SR in the data directory and a delivery to "pacs"."""
    index = InstanceIndex(engine)
    index.record(
        ReceivedInstance(
            STUDY, STUDY + ".1", STUDY + ".1.1", "1.2.840.10008.5.1.4.1.1.2",
            str(ExplicitVRLittleEndian), "CT", "spool/x.dcm", 10, T0, "PACS", None,
        )
    )  # fmt: skip
    index.close()
    queue_jobs_for_quiet_studies(engine, 1, now=T0 + dt.timedelta(seconds=5))
    job = claim_next_job(engine, "worker", 60)
    assert job is not None
    sop = generate_uid(prefix=None)  # 2.25.<UUID>: at most 44 characters
    relative = f"outputs/{STUDY}/{sop}.dcm"
    digest = write_sr(data_dir / relative, sop)
    record = OutputRecord(
        STUDY, sop + ".1", sop, str(BASIC_TEXT_SR), "sr", "basic-text", relative, digest, "p"
    )
    complete_job(engine, job.job_id, "worker", [record], [(sop, "pacs")])
    return sop


def only_delivery(engine: Engine) -> DeliveryLine:
    (line,) = list_deliveries(engine)
    return line


def run_until(sender: Sender, engine: Engine, done: Callable[[DeliveryLine], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done(only_delivery(engine)):
        assert time.monotonic() < deadline, f"delivery stuck: {only_delivery(engine)}"
        if not sender.run_once():
            time.sleep(0.05)


def start_storescp(port: int, folder: Path) -> subprocess.Popen[bytes]:
    storescp = require_tool("storescp")
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [storescp, "-aet", "DEST", "-od", str(folder), "+xa", str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


def test_delivered_once_to_storescp(
    engine: Engine, data_dir: Path, tmp_path: Path, queued_output: str
) -> None:
    port = free_port()
    received = tmp_path / "received"
    process = start_storescp(port, received)
    try:
        wait_listening(port)
        sender = Sender(settings_for(data_dir, port), engine, "sender")
        assert sender.run_once() is True
        line = only_delivery(engine)
        assert (line.state, line.attempts, line.last_error) == (DeliveryState.DELIVERED, 1, None)
        assert sender.run_once() is False  # nothing more is due
    finally:
        stop(process)
    (stored,) = received.iterdir()
    assert pydicom.dcmread(stored).SOPInstanceUID == queued_output


def test_destination_down_for_a_while(
    engine: Engine, data_dir: Path, tmp_path: Path, queued_output: str
) -> None:
    port = free_port()
    sender = Sender(settings_for(data_dir, port), engine, "sender")
    # Down: each try fails and is rescheduled, not given up.
    for attempt in (1, 2):
        before = dt.datetime.now(dt.UTC)
        while not sender.run_once():
            time.sleep(0.02)
        line = only_delivery(engine)
        assert (line.state, line.attempts) == (DeliveryState.PENDING, attempt)
        assert line.last_error is not None and "cannot connect" in line.last_error
        assert line.next_attempt_at is not None and line.next_attempt_at > before
    received = tmp_path / "received"
    process = start_storescp(port, received)
    try:
        sender.start()
        deadline = time.monotonic() + 10
        while only_delivery(engine).state != DeliveryState.DELIVERED:
            assert time.monotonic() < deadline, only_delivery(engine)
            time.sleep(0.05)
        sender.stop()
        assert only_delivery(engine).attempts >= 3
    finally:
        sender.stop()
        stop(process)
    assert len(list(received.iterdir())) == 1


def test_gives_up_after_max_attempts(engine: Engine, data_dir: Path, queued_output: str) -> None:
    sender = Sender(settings_for(data_dir, free_port(), max_attempts=2), engine, "sender")
    run_until(sender, engine, lambda d: d.state == DeliveryState.DEAD)
    line = only_delivery(engine)
    assert line.attempts == 2
    assert line.last_error is not None and "gave up after 2 tries" in line.last_error
    assert f"--resend {line.id}" in line.last_error


@pytest.fixture
def scp(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., int]]:
    """Start an in-process pynetdicom AE; returns its port."""
    # Importing the listener (dicom_node.server) makes every acceptor of this process take any
    # storage class; the peer stands for another process that supports only what it lists.
    from pynetdicom import _config

    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    servers: list[Any] = []

    def start(
        ae_title: str = "OTHER",
        storage: bool = True,
        statuses: list[int] | None = None,
    ) -> int:
        ae = AE(ae_title=ae_title)
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        if storage:
            ae.add_supported_context(BASIC_TEXT_SR, [ExplicitVRLittleEndian])
        answers = list(statuses or [0x0000])

        def on_store(_event: Any) -> int:
            return answers.pop(0) if len(answers) > 1 else answers[0]

        # Port 0: the kernel picks the port as it binds.
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def test_called_ae_title_refused_goes_dead_at_once_and_resend_brings_it_back(
    engine: Engine, data_dir: Path, queued_output: str, scp: Callable[..., int]
) -> None:
    port = scp(ae_title="OTHER")
    wrong = Sender(settings_for(data_dir, port, ae_title="DEST"), engine, "sender")
    assert wrong.run_once() is True
    line = only_delivery(engine)
    assert (line.state, line.attempts) == (DeliveryState.DEAD, 1)
    assert line.last_error == (
        f"destination pacs (DEST@127.0.0.1:{port}) rejected the association permanently: "
        "called AE title not recognised; check destinations.ae_title"
    )
    assert wrong.run_once() is False
    # The operator fixes destinations.ae_title and resends the dead letters.
    assert resend(engine) == 1
    assert (only_delivery(engine).state, only_delivery(engine).attempts) == (
        DeliveryState.PENDING,
        0,
    )
    fixed = Sender(settings_for(data_dir, port, ae_title="OTHER"), engine, "sender")
    assert fixed.run_once() is True
    assert only_delivery(engine).state == DeliveryState.DELIVERED


def test_no_storage_class_refused_goes_dead_at_once(
    engine: Engine, data_dir: Path, queued_output: str, scp: Callable[..., int]
) -> None:
    port = scp(ae_title="DEST", storage=False)
    Sender(settings_for(data_dir, port), engine, "sender").run_once()
    line = only_delivery(engine)
    assert (line.state, line.attempts) == (DeliveryState.DEAD, 1)
    assert line.last_error is not None and "refused the presentation context" in line.last_error
    assert "Basic Text SR" in line.last_error


def test_warning_status_counts_as_delivered(
    engine: Engine, data_dir: Path, queued_output: str, scp: Callable[..., int]
) -> None:
    port = scp(ae_title="DEST", statuses=[0xB000])
    Sender(settings_for(data_dir, port), engine, "sender").run_once()
    assert only_delivery(engine).state == DeliveryState.DELIVERED


def test_out_of_resources_is_retried(
    engine: Engine, data_dir: Path, queued_output: str, scp: Callable[..., int]
) -> None:
    port = scp(ae_title="DEST", statuses=[0xA702, 0x0000])
    sender = Sender(settings_for(data_dir, port), engine, "sender")
    sender.run_once()
    line = only_delivery(engine)
    assert (line.state, line.attempts) == (DeliveryState.PENDING, 1)
    assert line.last_error is not None and "out of resources" in line.last_error
    run_until(sender, engine, lambda d: d.state == DeliveryState.DELIVERED)
    assert only_delivery(engine).attempts == 2


def test_failure_status_goes_dead_at_once(
    engine: Engine, data_dir: Path, queued_output: str, scp: Callable[..., int]
) -> None:
    port = scp(ae_title="DEST", statuses=[0xC000])
    Sender(settings_for(data_dir, port), engine, "sender").run_once()
    line = only_delivery(engine)
    assert line.state == DeliveryState.DEAD and "0xC000" in (line.last_error or "")


def test_destination_no_longer_configured_goes_dead(
    engine: Engine, data_dir: Path, queued_output: str
) -> None:
    settings = settings_for(data_dir, 1).model_copy(update={"destinations": ()})
    Sender(settings, engine, "sender").run_once()
    line = only_delivery(engine)
    assert line.state == DeliveryState.DEAD
    assert "'pacs' is no longer configured" in (line.last_error or "")


def test_retry_delay_doubles_up_to_the_cap_with_jitter(data_dir: Path) -> None:
    settings = settings_for(data_dir, 1, first_retry_seconds=5, max_retry_seconds=600)
    for attempts, full in ((1, 5), (2, 10), (4, 40), (20, 600)):
        delays = [retry_delay(settings, attempts) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert max(delays) - min(delays) > 0
