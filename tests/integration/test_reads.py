"""Reads on Postgres: api.db.read skips pool_pre_ping's round trip, so a pooled connection the
server dropped (a restart, an idle timeout) must be retried, not answered 503; the event loop's
reader (api.aio_db) answers status reads exactly as the thread path does."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from api.aio_db import AsyncReader
from api.errors import DatabaseUnavailable, NotFound
from tests.integration.stack import (
    PG_ADMIN_URL,
    create_database,
    database_url,
    drop_database,
    migrate,
)

T = TypeVar("T")

pytestmark = pytest.mark.integration


@pytest.fixture
def database() -> Iterator[str]:
    from api import db
    from api.settings import get_settings

    name = create_database("taas_reads")
    saved = os.environ.get("TAAS_DATABASE_URL")
    os.environ["TAAS_DATABASE_URL"] = database_url(name)
    get_settings.cache_clear()
    db.reset()
    yield name
    db.get_read_sessionmaker().kw["bind"].dispose()
    if saved is None:
        os.environ.pop("TAAS_DATABASE_URL", None)
    else:
        os.environ["TAAS_DATABASE_URL"] = saved
    get_settings.cache_clear()
    db.reset()
    drop_database(name)


def _drop_connections(name: str) -> int:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        row = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def test_a_read_survives_the_server_dropping_its_pooled_connection(database: str) -> None:
    from api.db import read

    def backend(session: Session) -> int:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())

    first = read(backend)
    assert read(backend) == first  # pooled: the same server connection
    assert _drop_connections(database) == 1
    second = read(backend)  # the dead connection fails once, then a new one answers
    assert second != first
    assert read(backend) == second


# --- the event loop's reader (api.aio_db): status reads on Postgres without a thread --------

@pytest.fixture
def migrated(database: str) -> Iterator[str]:
    from api import db

    migrate({**os.environ, "TAAS_DATABASE_URL": database_url(database)})
    yield database
    db.get_engine().dispose()


def _add_jobs() -> list[str]:
    """A running job, and a failed one with every optional column set."""
    from api.db import session_scope
    from api.models import Job, JobStatus, new_id, utcnow

    summary = {"input_shape": [1], "layers": [], "total_params": 2, "trainable_params": 2,
               "param_bytes": 8, "activation_bytes_per_sample": 4}
    running = Job(id=new_id(), tenant="a", name="running", status=JobStatus.running,
                  spec={}, summary=summary, epochs=10, progress_epoch=3, attempt=1,
                  metrics={"loss": 0.25, "accuracy": 0.5}, started_at=utcnow())
    failed = Job(id=new_id(), tenant="a", name="failed", status=JobStatus.failed, spec={},
                 summary=summary, epochs=10, progress_epoch=10, attempt=2, metrics=None,
                 error_type="training_diverged", error_message="the loss became nan",
                 mlflow_experiment_id="7", mlflow_run_id="r1", started_at=utcnow(),
                 finished_at=utcnow())
    with session_scope() as session:
        session.add_all([running, failed])
    return [running.id, failed.id]


async def _with_reader(database: str, use: Callable[[AsyncReader], Awaitable[T]]) -> T:
    reader = AsyncReader.create(database_url(database))
    assert reader is not None
    try:
        return await use(reader)
    finally:
        await reader.close()


def test_the_event_loop_reader_answers_exactly_as_the_thread_path(migrated: str) -> None:
    from api.cache import LRUCache
    from api.services.jobs import read_job, read_job_async
    from api.settings import get_settings

    ids = _add_jobs()
    settings = get_settings()

    async def read_all(reader: AsyncReader) -> list[bytes]:
        return [await read_job_async(reader, job_id=job_id, tenant="a", settings=settings,
                                     finished=LRUCache(8)) for job_id in ids]

    threaded = [read_job(job_id=job_id, tenant="a", settings=settings, finished=LRUCache(8))
                for job_id in ids]
    assert asyncio.run(_with_reader(migrated, read_all)) == threaded
    assert json.loads(threaded[1])["error"]["type"] == "training_diverged"

    async def as_other_tenant(reader: AsyncReader) -> bytes:
        return await read_job_async(reader, job_id=ids[0], tenant="b", settings=settings,
                                    finished=LRUCache(8))

    with pytest.raises(NotFound):
        asyncio.run(_with_reader(migrated, as_other_tenant))


def test_the_event_loop_reader_survives_the_server_dropping_its_connection(
        database: str) -> None:
    async def backend(reader: AsyncReader, seconds: float = 0) -> int:
        row = await reader.row("SELECT pg_backend_pid() AS pid, pg_sleep(%(s)s)", {"s": seconds})
        return int(row.pid)

    async def around_a_drop(reader: AsyncReader) -> tuple[set[int], int]:
        # Three reads at once leave three connections in the pool; all of them die.
        pooled = set(await asyncio.gather(*(backend(reader, 0.3) for _ in range(3))))
        assert len(pooled) == 3
        assert _drop_connections(database) == len(pooled)
        return pooled, await backend(reader)

    pooled, after = asyncio.run(_with_reader(database, around_a_drop))
    assert after not in pooled


def test_the_event_loop_reader_answers_503_soon_when_postgres_is_unreachable() -> None:
    async def read_unreachable() -> None:
        reader = AsyncReader("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens
        try:
            await reader.row("SELECT 1", {})
        finally:
            await reader.close()

    began = time.monotonic()
    with pytest.raises(DatabaseUnavailable):
        asyncio.run(read_unreachable())
    assert time.monotonic() - began < 2


def test_there_is_no_event_loop_reader_on_sqlite() -> None:
    assert AsyncReader.create("sqlite:////tmp/taas.db") is None
