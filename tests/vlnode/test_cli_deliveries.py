"""``vlnode deliveries`` and ``vlnode status`` show dead letters; ``--resend-dead`` revives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.database import make_engine, upgrade_schema
from store.outputs import (
    DeliveryState,
    claim_due_delivery,
    complete_job,
    delivery_failed,
    list_deliveries,
)
from tests.store.factories import claimed, queue_studies, sr_output
from vlnode.cli import main


def test_dead_letters_are_listed_and_resent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("VLNODE_STORE__DATA_DIR", str(data_dir))
    engine = make_engine(f"sqlite:///{(data_dir / 'vlnode.db').resolve()}")
    upgrade_schema(engine)
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    output = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [output], [(output.sop_instance_uid, "pacs")])
    due = claim_due_delivery(engine, "sender")
    assert due is not None
    delivery_failed(engine, due.delivery_id, "called AE title not recognised", retry_at=None)

    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "called AE title not recognised" in status and "--resend-dead" in status
    assert main(["deliveries", "--state", "dead"]) == 0
    listed = capsys.readouterr().out
    assert output.sop_instance_uid in listed and "dead" in listed
    assert main(["deliveries", "--resend-dead"]) == 0
    capsys.readouterr()
    (line,) = list_deliveries(engine)
    assert line.state == DeliveryState.PENDING and line.attempts == 0
    engine.dispose()
