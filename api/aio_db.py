"""Reads on the event loop: Postgres through psycopg's async driver.

For the read polling clients make most (a queued or running job's status). In one API process
on this project's machine it costs ~0.1 ms of CPU, against ~0.25 ms for SQLAlchemy Core plus
~0.1 ms for the hop to a worker thread and back (`python -m bench --only B5`). SQLite, the
embedded default, has no async driver here: there `AsyncReader.create` gives None and callers
read through `api.db` in a thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import namedtuple_row
from sqlalchemy import ClauseElement
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from api.errors import DatabaseUnavailable

log = logging.getLogger("taas.api")

Connection = psycopg.AsyncConnection[Any]


def postgres_sql(statement: ClauseElement) -> str:
    """A SQLAlchemy statement as psycopg's SQL, with %(name)s parameters (one source of truth
    for the columns, the model's)."""
    return str(statement.compile(dialect=postgresql.psycopg.dialect()))


class AsyncReader:
    """Autocommit connections opened on demand and kept for reuse (at most `max_size`); rows
    come back as named tuples.

    Not psycopg_pool: its pool reconnects in the background with a growing backoff, so after
    Postgres came back reads kept failing for seconds (the fault test of a Postgres outage
    caught it). Here, as with SQLAlchemy's pool, a read connects when it needs to: a down
    database answers 503 at once, and the first read after it is back succeeds.
    """

    def __init__(self, conninfo: str, *, max_size: int = 10) -> None:
        self.conninfo = conninfo
        self.idle: list[Connection] = []
        self.slots = asyncio.Semaphore(max_size)

    @classmethod
    def create(cls, database_url: str) -> AsyncReader | None:
        """A reader for a Postgres SQLAlchemy URL; None for any other database."""
        url = make_url(database_url)
        if url.get_backend_name() != "postgresql":
            return None
        return cls(url.set(drivername="postgresql").render_as_string(hide_password=False))

    async def close(self) -> None:
        idle, self.idle = self.idle, []
        for connection in idle:
            await connection.close()

    async def row(self, sql: str, parameters: dict[str, Any]) -> Any:
        """The first row (a named tuple) or None. A kept connection the server dropped (it
        restarted) fails once; then every kept connection is dropped, as SQLAlchemy's pool
        does, and the read retried on a new one."""
        return await self._read(sql, parameters, many=False)

    async def rows(self, sql: str, parameters: dict[str, Any]) -> list[Any]:
        """Every row (named tuples), as `row` reads them."""
        found: list[Any] = await self._read(sql, parameters, many=True)
        return found

    async def _read(self, sql: str, parameters: dict[str, Any], *, many: bool) -> Any:
        for attempt in (1, 2):
            try:
                async with self._connection() as connection:
                    cursor = await connection.execute(sql, parameters)
                    return await (cursor.fetchall() if many else cursor.fetchone())
            except psycopg.OperationalError as error:
                if attempt == 2:
                    log.warning("database unavailable: %s", error)
                    raise DatabaseUnavailable() from None
                log.info("a read failed; dropping kept connections and retrying: %s", error)
                await self.close()
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        async with self.slots:
            connection = self.idle.pop() if self.idle else await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, row_factory=namedtuple_row)
            try:
                yield connection
            finally:
                # Only a connection back at rest is kept (not one a failed or cancelled
                # query left mid-way).
                if connection.info.transaction_status == TransactionStatus.IDLE:
                    self.idle.append(connection)
                else:
                    await connection.close()
