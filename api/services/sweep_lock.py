"""One sweep's controller turn (or cancel) at a time, across processes and hosts.

PostgreSQL: a session-level advisory lock on the sweep's id, held on one connection that the
whole turn's Session uses, so it outlives the commits that creating each trial's job makes
(a row lock would end at the first one). SQLite (the embedded default, one host): an
exclusive `flock` on a file per sweep under data_dir; taking no database lock for the turn
lets Optuna write its tables on its own connection meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.db import get_engine, get_sessionmaker
from api.settings import get_settings

log = logging.getLogger("taas.sweeps")

LOCK_CLASS = 7013  # the advisory lock key space of sweeps (pg_advisory_lock(int, int))


@contextlib.contextmanager
def locked_sweep(sweep_id: str) -> Iterator[Session]:
    """A Session that holds the sweep's lock until the block ends; the block commits."""
    engine = get_engine()
    if engine.dialect.name != "postgresql":
        with _file_lock(sweep_id), get_sessionmaker()() as session:
            yield session
        return
    key = {"key": sweep_id}
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:cls, hashtext(:key))"),
                           {"cls": LOCK_CLASS, **key})
        connection.commit()
        try:
            with Session(bind=connection, expire_on_commit=False) as session:
                yield session
        finally:
            _unlock(connection, key)


def _unlock(connection: object, key: dict[str, str]) -> None:
    from sqlalchemy import Connection

    assert isinstance(connection, Connection)
    try:
        connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:cls, hashtext(:key))"),
                           {"cls": LOCK_CLASS, **key})
        connection.commit()
    except DBAPIError as error:  # the connection is gone, and its session's locks with it
        log.warning("could not release sweep lock %s: %s", key["key"], error)
        connection.invalidate()


@contextlib.contextmanager
def _file_lock(sweep_id: str) -> Iterator[None]:
    folder = get_settings().data_dir / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"sweep-{sweep_id}.lock").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
