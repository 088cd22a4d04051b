"""Model versions and aliases in a real SQLite database migrated by Alembic, through the
functions the worker (succeed -> api.lifecycle), the routes and the reaper use."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from api import db
    from api.settings import get_settings

    data = tmp_path_factory.mktemp("registry")
    env = {**os.environ, "TAAS_DATA_DIR": str(data)}
    env.pop("TAAS_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    old = os.environ.get("TAAS_DATA_DIR")
    saved_url = os.environ.pop("TAAS_DATABASE_URL", None)
    os.environ["TAAS_DATA_DIR"] = str(data)
    get_settings.cache_clear()
    db.reset()
    yield
    if old is None:
        os.environ.pop("TAAS_DATA_DIR", None)
    else:
        os.environ["TAAS_DATA_DIR"] = old
    if saved_url is not None:
        os.environ["TAAS_DATABASE_URL"] = saved_url
    get_settings.cache_clear()
    db.reset()


# A job's status change writes its public view (the live event stream), summary included.
SUMMARY = {"input_shape": [1], "layers": [], "total_params": 0, "trainable_params": 0,
           "param_bytes": 0, "activation_bytes_per_sample": 0}

def _succeeded_job(tenant: str, name: str) -> str:
    from api.db import session_scope
    from api.models import Job, JobStatus, new_id, utcnow
    from worker import store

    job_id = new_id()
    with session_scope() as session:
        session.add(Job(id=job_id, tenant=tenant, name=name, status=JobStatus.queued, spec={},
                        summary=SUMMARY, epochs=1, dispatched_at=utcnow()))
    attempt = store.claim(job_id)
    assert attempt is not None
    assert store.succeed(job_id, attempt, weights=b"w", sha256="0" * 64)
    return job_id


def test_versions_aliases_and_their_mlflow_sync_state() -> None:
    from api.db import get_sessionmaker, read, session_scope
    from api.errors import NotFound
    from api.services import models

    plain = get_sessionmaker()  # as the routes' sessions: set_alias and delete_alias commit

    first, second = _succeeded_job("a", "m"), _succeeded_job("a", "m")
    other = _succeeded_job("b", "m")
    with plain() as session:
        assert models.version_of_job(session, job_id=second) == ("m", 2)
        assert models.version_of_job(session, job_id=other) == ("m", 1)
        assert models.list_models(session, tenant="a") == [
            {"name": "m", "latest_version": 2, "aliases": {}}]
        before = models.generation(session)
        models.set_alias(session, tenant="a", name="m", alias="champion", version=1)
        with pytest.raises(NotFound, match="no version 2"):
            models.set_alias(session, tenant="b", name="m", alias="champion", version=2)
        with pytest.raises(NotFound, match="no model named"):
            models.set_alias(session, tenant="b", name="x", alias="champion", version=1)
        assert models.generation(session) == before + 1
        assert models.get_model(session, tenant="a", name="m")["mlflow_synced"] is False
    generation, directory = read(models.load_directory)
    assert generation == before + 1
    assert directory[("a", "m")].versions == {1: first, 2: second}
    assert directory[("a", "m")].aliases == {"champion": 1}
    assert directory[("b", "m")].aliases == {}
    with session_scope() as session:
        (pending,) = models.pending_aliases(session)
        assert pending[:4] == ("a", "m", "champion", 1)
        models.alias_synced(session, tenant="a", name="m", alias="champion",
                            updated_at=pending[4])
    with plain() as session:
        assert models.pending_aliases(session) == []
        models.delete_alias(session, tenant="a", name="m", alias="champion")
        with pytest.raises(NotFound):
            models.delete_alias(session, tenant="a", name="m", alias="champion")
    _, directory = read(models.load_directory)
    assert directory[("a", "m")].aliases == {}
    with session_scope() as session:
        (tombstone,) = models.pending_aliases(session)
        assert tombstone[3] is None  # MLflow is still to be told to remove it
        models.alias_synced(session, tenant="a", name="m", alias="champion",
                            updated_at=tombstone[4])
    with session_scope() as session:
        assert models.pending_aliases(session) == []
