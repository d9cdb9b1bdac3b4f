"""vlnode status --json and vlnode purge (--dry-run) on a store with a finished study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from store.database import make_engine, upgrade_schema
from store.outputs import claim_due_delivery, complete_job, delivery_succeeded
from tests.store.factories import claimed, queue_studies, sr_output
from vlnode.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory whose SQLite store holds one study read and delivered, with files."""
    for key in ("VLNODE_CONFIG", "VLNODE_STORE__DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    data = tmp_path / "data"
    monkeypatch.setenv("VLNODE_STORE__DATA_DIR", str(data))
    engine = make_engine(f"sqlite:///{data / 'vlnode.db'}")
    upgrade_schema(engine)
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    due = claim_due_delivery(engine, "sender-a", 60)
    assert due is not None
    delivery_succeeded(engine, due.delivery_id)
    engine.dispose()
    for relative in (f"spool/{study}/{study}.1/{study}.1.1.dcm", sr.file_path):
        (data / relative).parent.mkdir(parents=True, exist_ok=True)
        (data / relative).write_bytes(b"\0" * 1000)
    return data


def status_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_status_json(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = status_json(capsys)
    assert document["data_directory"] == str(data_dir.resolve())
    assert (document["studies"], document["instances"], document["outputs"]) == (1, 1, 1)
    assert document["jobs_by_state"] == {"done": 1}
    assert document["deliveries_by_state"] == {"delivered": 1}
    (study,) = document["recent_studies"]
    assert study["job_state"] == "done" and "T" in study["last_received_at"]


def test_purge_dry_run_then_purge(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    floor = ["--min-free-disk-mb", str(10**9)]  # below any floor this big: everything may go
    assert main(["purge", "--dry-run", *floor]) == 0
    out = capsys.readouterr().out
    assert "would purge 1 study(ies)" in out and "disk below its floor" in out
    assert len(list(data_dir.rglob("*.dcm"))) == 2

    assert main(["purge", *floor]) == 0
    assert "purged 1 study(ies), 0.0 MB of instances, 2 file(s) removed" in capsys.readouterr().out
    assert not list(data_dir.rglob("*.dcm"))
    document = status_json(capsys)
    assert (document["studies"], document["instances"]) == (1, 0)


def test_purge_without_a_policy_says_what_to_set(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["purge"]) == 2
    assert "retention.keep_days" in capsys.readouterr().err
    assert len(list(data_dir.rglob("*.dcm"))) == 2
