"""api.db.read on Postgres: read-only requests skip pool_pre_ping's round trip, so a pooled
connection the server dropped (a restart, an idle timeout) must be retried, not answered 503."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.integration.stack import PG_ADMIN_URL, create_database, database_url, drop_database

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
