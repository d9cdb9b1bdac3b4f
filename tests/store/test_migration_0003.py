"""Migration 0003 (retention columns, delivery tries) over 0002 rows, and back."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, select

from store.database import alembic_config, upgrade_schema
from store.outputs import complete_job
from store.retention import purge_candidates
from store.tables import Study
from tests.store.factories import claimed, queue_studies, sr_output


def test_0003_keeps_existing_rows_and_downgrades_with_rows(engine: Engine) -> None:
    (study,) = queue_studies(engine, 1)
    job = claimed(engine)
    sr = sr_output(study)
    complete_job(engine, job.job_id, "worker-a", [sr], [(sr.sop_instance_uid, "pacs")])
    config = alembic_config(engine)
    command.downgrade(config, "0002")  # with a study, a job, an output and a delivery in place
    assert "delivery_attempt" not in inspect(engine).get_table_names()
    assert "purged_at" not in {c["name"] for c in inspect(engine).get_columns("study")}

    upgrade_schema(engine)

    assert "delivery_attempt" in inspect(engine).get_table_names()
    with engine.connect() as conn:
        row = conn.execute(select(Study)).one()
    assert (row.purged_at, row.purged_instances, row.purged_bytes) == (None, 0, 0)
    assert purge_candidates(engine) == []  # its delivery is still pending
