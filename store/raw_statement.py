"""Core statements compiled once and run on the DBAPI cursor: the receive path's few writes.

Executing a Core statement costs SQLAlchemy about 0.1 ms of Python per call (cache key,
execution context, result object), more than SQLite takes to run it: on the receive path,
one INSERT per instance, that was 44% of the listener's Python time for a stream of small
images. :class:`RawStatement` compiles the statement for the engine's dialect once, keeps
the bind processors of its parameters' column types (timestamps to UTC, and to SQLite's
text form), and runs it with ``cursor.execute`` in the caller's transaction, so rows are
written exactly as SQLAlchemy would write them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.sql.expression import Executable


class RawStatement:
    """One statement, compiled for ``engine``'s dialect.

    Parameters
    ----------
    statement
        An INSERT, UPDATE or SELECT with bound parameters.
    engine
        The engine whose dialect compiles it.
    column_keys
        For an INSERT given its values at execution: the columns it sets.
    """

    def __init__(
        self, statement: Executable, engine: Engine, column_keys: Sequence[str] | None = None
    ) -> None:
        dialect = engine.dialect
        compiled = statement.compile(  # type: ignore[attr-defined]
            dialect=dialect, column_keys=list(column_keys) if column_keys else None
        )
        self.sql: str = compiled.string
        # Positional paramstyles (SQLite's "?") list the names in order; named ones do not.
        self._order: list[str] | None = list(compiled.positiontup) if compiled.positiontup else None
        self._processors: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._processors[name] = processor

    def first(self, conn: Connection, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run on ``conn``'s DBAPI connection, inside its open transaction; the first row
        returned (RETURNING, SELECT), or None."""
        cursor = self._run(conn, values)
        try:
            row = cursor.fetchone()
            return None if row is None else tuple(row)
        finally:
            cursor.close()

    def run(self, conn: Connection, values: Mapping[str, Any]) -> int:
        """Run as :meth:`first` does; the number of rows it changed."""
        cursor = self._run(conn, values)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _run(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        processors = self._processors
        if self._order is None:
            parameters: Any = {
                name: processors[name](value) if name in processors else value
                for name, value in values.items()
            }
        else:
            parameters = tuple(
                processors[name](values[name]) if name in processors else values[name]
                for name in self._order
            )
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(self.sql, parameters)
        return cursor
