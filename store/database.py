"""Engine and session factory, and bringing the schema up to date with Alembic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class StoreError(RuntimeError):
    """The database cannot be reached or brought up to date."""


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL and a busy timeout so several threads can write."""
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never block the writer, and a commit is one append to the log.
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit is not fsynced (the log is, at checkpoints). A process crash loses no
    # committed row; a power loss may lose the last few, and the next start records them again
    # from their spool files, which were made durable before the commit (dicom_node.recovery).
    # FULL would add an fsync per instance, taken while holding the database's only write lock.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def dialect_insert(bind: Connection | Engine) -> Any:
    """The INSERT construct with ``on_conflict_*`` of the bind's database (PostgreSQL, SQLite)."""
    return postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied (idempotent, safe at each start)."""
    try:
        command.upgrade(alembic_config(engine), "head")
    except Exception as exc:
        raise StoreError(
            f"cannot bring the database at {engine.url.render_as_string(hide_password=True)} "
            f"up to date: {exc}. Check store.database_url and that the database is reachable."
        ) from exc
