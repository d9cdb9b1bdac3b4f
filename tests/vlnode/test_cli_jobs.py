"""``vlnode jobs`` lists jobs with their reasons and queues failed ones again on request."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.database import make_engine, upgrade_schema
from store.jobs import JobState, claim_next_job, finish_job, list_jobs
from tests.store.factories import claimed, queue_studies
from vlnode.cli import main


def test_a_failed_job_is_listed_and_queued_again_a_done_one_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("VLNODE_STORE__DATA_DIR", str(data_dir))
    engine = make_engine(f"sqlite:///{(data_dir / 'vlnode.db').resolve()}")
    upgrade_schema(engine)
    queue_studies(engine, 2)
    failed = claimed(engine)
    finish_job(engine, failed.job_id, "worker-a", state=JobState.FAILED, reason="out of memory")
    done = claim_next_job(engine, "worker-a", 60)
    assert done is not None
    finish_job(engine, done.job_id, "worker-a", state=JobState.DONE, reason=None)

    assert main(["jobs", "--state", "failed"]) == 0
    listed = capsys.readouterr().out
    assert "out of memory" in listed and "--retry" in listed
    assert failed.study_instance_uid in listed and done.study_instance_uid not in listed

    assert main(["jobs", "--retry", str(failed.job_id), str(done.job_id), "999"]) == 1
    captured = capsys.readouterr()
    assert "queued again: 1 of 3" in captured.out
    assert "is done" in captured.err and "999 does not exist" in captured.err
    states = {j.job_id: (j.state, j.attempts) for j in list_jobs(engine)}
    assert states == {failed.job_id: (JobState.QUEUED, 0), done.job_id: (JobState.DONE, 1)}
    again = claim_next_job(engine, "worker-b", 60)  # a worker takes it up as a first attempt
    assert again is not None and again.job_id == failed.job_id and again.attempt == 1
    engine.dispose()
