"""Migration 0002 on a database that already holds 0001 rows, and back."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, inspect, text

from store.database import alembic_config, upgrade_schema
from store.jobs import requeue_expired_jobs
from store.tables import JobState
from tests.store.factories import job_row


def test_0002_upgrades_existing_rows_and_downgrades(engine: Engine) -> None:
    config = alembic_config(engine)
    command.downgrade(config, "0001")
    assert "output" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO study (id, study_instance_uid, first_received_at, last_received_at)"
                " VALUES (1, '1.2', '2026-01-01 12:00:00+00:00', '2026-01-01 12:00:00+00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO job (id, study_id, kind, state, attempts, study_through, created_at,"
                " worker) VALUES (7, 1, 'analyse', 'RUNNING', 1, '2026-01-01 12:00:00+00:00',"
                " '2026-01-01 12:00:00+00:00', 'old-worker')"
            )
        )
    upgrade_schema(engine)
    tables = set(inspect(engine).get_table_names())
    assert {"output", "delivery", "series_embedding"} <= tables
    row = job_row(engine, 7)
    assert row.state == JobState.RUNNING and row.lease_expires_at is None
    # A job running when the node was upgraded has no lease: it is taken back.
    assert requeue_expired_jobs(engine, 3) == (1, 0)
    command.downgrade(config, "0001")
    assert "delivery" not in inspect(engine).get_table_names()
    assert "lease_expires_at" not in {c["name"] for c in inspect(engine).get_columns("job")}
