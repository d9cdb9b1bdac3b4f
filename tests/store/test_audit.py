"""The audit trail: associations (accepted, rejected), jobs, delivery tries; CSV and JSON."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from dicom_node.sender import Sender
from store.audit import audit_trail, record_delivery_try
from store.ingest import close_association, open_association
from store.outputs import complete_job
from store.records import AssociationRequest
from store.tables import Association, DeliveryAttempt
from tests.store.factories import claimed, queue_studies, sr_output
from vlnode.cli import main
from vlnode.cli.audit import parse_since, render
from vlnode.settings import Settings, StoreSettings


def request(accepted: bool, calling: str = "MODALITY") -> AssociationRequest:
    return AssociationRequest(
        calling_ae_title=calling,
        called_ae_title="VLNODE",
        peer_host="10.0.0.7",
        peer_port=40001,
        accepted=accepted,
        reason=None if accepted else "calling AE title INTRUDER is not allowed",
    )


def traffic(engine: Engine) -> tuple[str, int]:
    """One released association with 3 stores, one rejection, one job done, one delivery."""
    accepted = open_association(engine, request(True))
    close_association(engine, accepted, stored=3, duplicate=1, failed=0)
    open_association(engine, request(False, "INTRUDER"))
    (study,) = queue_studies(engine, 1)
    job = claimed(engine, "worker-7")
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-7", [sr], [(sr.sop_instance_uid, "pacs")])
    return study, job.job_id


def test_trail_has_who_when_and_outcome_of_each_kind(engine: Engine) -> None:
    study, job_id = traffic(engine)
    sender = Sender(Settings(store=StoreSettings(data_dir=Path("unused"))), engine, "sender-1")
    # No destination "pacs" is configured: the try ends dead, and is audited without a peer.
    assert sender.run_once()
    record_delivery_try(engine, 1, "pacs", ("ORTHANC", "pacs.local", 4242), "delivered")

    records = audit_trail(engine)

    by_kind = {(r.kind, r.outcome): r for r in records}
    released = by_kind["association", "released"]
    assert (released.peer_ae_title, released.peer_address) == ("MODALITY", "10.0.0.7:40001")
    assert "stored 3, duplicate 1, failed 0" in released.detail
    rejected = by_kind["association", "rejected"]
    assert rejected.peer_ae_title == "INTRUDER" and "not allowed" in rejected.detail
    job = by_kind["job", "done"]
    assert job.peer_address == "worker-7" and f"job {job_id}, study {study}" in job.detail
    dead = by_kind["delivery", "dead"]
    assert "no longer configured" in dead.detail and dead.peer_address == ""
    delivered = by_kind["delivery", "delivered"]
    assert (delivered.peer_ae_title, delivered.peer_address) == ("ORTHANC", "pacs.local:4242")
    assert [r.at for r in records] == sorted(r.at for r in records)


def test_since_leaves_out_older_events(engine: Engine) -> None:
    traffic(engine)
    old = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            update(Association).where(Association.accepted.is_(False)).values(started_at=old)
        )
    kinds = {(r.kind, r.outcome) for r in audit_trail(engine, since=old + dt.timedelta(days=1))}
    assert ("association", "released") in kinds and ("association", "rejected") not in kinds


def test_a_try_with_an_unknown_outcome_is_refused(engine: Engine) -> None:
    with pytest.raises(ValueError, match="delivered, retry, dead"):
        record_delivery_try(engine, 1, "pacs", None, "lost")
    with engine.connect() as conn:
        assert conn.execute(DeliveryAttempt.__table__.select()).first() is None


def test_csv_and_json_round_trip(engine: Engine) -> None:
    traffic(engine)
    records = audit_trail(engine)
    rows = list(csv.DictReader(io.StringIO(render(records, "csv"))))
    assert [r["kind"] for r in rows] == [r.kind for r in records]
    assert rows[1]["peer_ae_title"] == records[1].peer_ae_title
    document = json.loads(render(records, "json"))
    assert [d["outcome"] for d in document] == [r.outcome for r in records]
    assert dt.datetime.fromisoformat(document[0]["at"]) == records[0].at


def test_since_accepts_iso_times_and_ages() -> None:
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert parse_since("24h", now) == now - dt.timedelta(days=1)
    assert parse_since("2026-02-01T08:00") == dt.datetime(2026, 2, 1, 8, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="neither an ISO 8601 time"):
        parse_since("yesterday")


def test_command_writes_csv_to_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("VLNODE_CONFIG", "VLNODE_STORE__DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("VLNODE_STORE__DATA_DIR", str(tmp_path / "data"))
    from store.database import make_engine, upgrade_schema

    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'vlnode.db'}")
    upgrade_schema(engine)
    traffic(engine)
    engine.dispose()
    out = tmp_path / "audit.csv"
    assert main(["audit", "--since", "1d", "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert {r["outcome"] for r in rows} >= {"released", "rejected", "done"}
    assert main(["audit", "--since", "yesterday"]) == 2
