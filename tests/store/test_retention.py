"""Retention: finished studies purged by age or at a disk floor, never while anything needs them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, func, select

from store.instances import InstanceIndex
from store.jobs import queue_jobs_for_quiet_studies
from store.outputs import claim_due_delivery, complete_job, delivery_succeeded
from store.retention import RetentionPolicy, purge, purge_candidates
from store.tables import Instance, Output, Study, utcnow
from tests.store.factories import T0, claimed, queue_studies, received, sr_output

WEEK = RetentionPolicy(keep_days=7)


def later(days: float) -> dt.datetime:
    return utcnow() + dt.timedelta(days=days)


def make_files(engine: Engine, data_dir: Path) -> None:
    """Put a file (of 1000 bytes, as the rows say) behind every instance and output row."""
    with engine.connect() as conn:
        paths = list(conn.scalars(select(Instance.file_path))) + list(
            conn.scalars(select(Output.file_path))
        )
    for relative in paths:
        (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / relative).write_bytes(b"\0" * 1000)


def finish(engine: Engine, studies: list[str], deliver: bool = True) -> None:
    """End each study's job done with one SR for one destination, delivered if ``deliver``."""
    for study in studies:
        job = claimed(engine)
        sr = sr_output(study, suffix=study.replace(".", ""))
        complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
        if deliver:
            due = claim_due_delivery(engine, "sender-a", 60)
            assert due is not None
            delivery_succeeded(engine, due.delivery_id)


def instance_count(engine: Engine, study: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count(Instance.id)).where(Instance.file_path.contains(f"/{study}/"))
            )
            or 0
        )


def test_a_finished_delivered_study_goes_after_its_days_its_rows_stay(
    engine: Engine, tmp_path: Path
) -> None:
    (study,) = queue_studies(engine, 1)
    finish(engine, [study])
    make_files(engine, tmp_path)
    assert not purge(engine, tmp_path, WEEK, now=later(6)).studies  # not old enough yet

    report = purge(engine, tmp_path, WEEK, now=later(8))

    assert [s.study_instance_uid for s in report.studies] == [study]
    assert report.files_removed == 2 and report.bytes == 1000
    assert not list((tmp_path / "spool").rglob("*.dcm"))
    assert not list((tmp_path / "outputs").rglob("*.dcm"))
    assert (tmp_path / "spool").is_dir()  # only the study's folders go
    assert instance_count(engine, study) == 0
    with engine.connect() as conn:
        row = conn.execute(select(Study).where(Study.study_instance_uid == study)).one()
        output = conn.execute(select(Output)).one()
    assert row.purged_at is not None and (row.purged_instances, row.purged_bytes) == (1, 1000)
    assert output.purged_at is not None  # the output row (and its delivery) stay: audit
    assert not purge_candidates(engine)  # nothing left to remove


def test_never_while_a_job_or_a_delivery_needs_the_study(engine: Engine, tmp_path: Path) -> None:
    done, undelivered, running, queued, receiving = queue_studies(engine, 5)
    finish(engine, [done])
    finish(engine, [undelivered], deliver=False)  # its delivery is pending
    claimed(engine)  # the third study's job is running; the others' are queued
    make_files(engine, tmp_path)
    index = InstanceIndex(engine)
    # A new instance re-opens the fifth study: no job covers it yet.
    index.record(received("1.9.4.1.2", at=T0 + dt.timedelta(seconds=30), study=receiving))
    index.close()
    assert [c.study_instance_uid for c in purge_candidates(engine)] == [done]

    report = purge(engine, tmp_path, WEEK, now=later(30))

    assert [s.study_instance_uid for s in report.studies] == [done]
    assert [instance_count(engine, s) for s in (done, undelivered, running, queued)] == [0, 1, 1, 1]
    assert instance_count(engine, receiving) == 2


def test_disk_floor_purges_oldest_first_until_enough_is_free(
    engine: Engine, tmp_path: Path
) -> None:
    studies = queue_studies(engine, 3)
    finish(engine, studies)
    make_files(engine, tmp_path)
    # 1500 bytes free of a 3000-byte floor: two studies of 1000 bytes must go, oldest first.
    policy = RetentionPolicy(min_free_bytes=3000)
    dry = purge(engine, tmp_path, policy, dry_run=True, free_bytes=lambda _: 1500)
    assert [s.study_instance_uid for s in dry.studies] == studies[:2]
    assert dry.files_removed == 0 and len(list(tmp_path.rglob("*.dcm"))) == 6

    report = purge(engine, tmp_path, policy, free_bytes=lambda _: 1500)

    assert [s.why for s in report.studies] == ["disk below its floor"] * 2
    assert [instance_count(engine, s) for s in studies] == [0, 0, 1]


def test_a_study_that_receives_while_being_purged_is_kept(engine: Engine, tmp_path: Path) -> None:
    (study,) = queue_studies(engine, 1)
    finish(engine, [study])
    make_files(engine, tmp_path)
    index = InstanceIndex(engine)

    def instance_arrives(_: Path) -> int:
        # Called after the candidates were chosen, before their rows are claimed.
        index.record(received("1.9.0.1.2", at=T0 + dt.timedelta(seconds=60), study=study))
        return 0

    report = purge(
        engine, tmp_path, RetentionPolicy(min_free_bytes=10**9), free_bytes=instance_arrives
    )
    index.close()
    assert not report.studies
    assert instance_count(engine, study) == 2


def test_a_study_sent_again_after_its_purge_is_received_and_read_anew(
    engine: Engine, tmp_path: Path
) -> None:
    (study,) = queue_studies(engine, 1)
    finish(engine, [study])
    make_files(engine, tmp_path)
    purge(engine, tmp_path, WEEK, now=later(8))
    index = InstanceIndex(engine)
    again = T0 + dt.timedelta(days=1)
    assert index.record(received("1.9.0.1.1", at=again, study=study))  # new, not a duplicate
    index.close()
    ready = queue_jobs_for_quiet_studies(engine, 1, now=again + dt.timedelta(seconds=5))
    assert [r.study_instance_uid for r in ready] == [study]


def test_no_policy_purges_nothing(engine: Engine, tmp_path: Path) -> None:
    (study,) = queue_studies(engine, 1)
    finish(engine, [study])
    assert not purge(engine, tmp_path, RetentionPolicy(), now=later(1000)).studies
    assert instance_count(engine, study) == 1
