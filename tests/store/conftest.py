"""A fresh, migrated database per test, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from store.database import make_engine, upgrade_schema
from tests.conftest import REQUIRE_PEERS

POSTGRES_URL = os.environ.get("VLNODE_TEST_POSTGRES_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        if not POSTGRES_URL:
            message = "VLNODE_TEST_POSTGRES_URL is not set (scripts/test.sh starts PostgreSQL)"
            if REQUIRE_PEERS:
                pytest.fail(message)
            pytest.skip(message)
        engine = make_engine(POSTGRES_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    upgrade_schema(engine)
    yield engine
    engine.dispose()
