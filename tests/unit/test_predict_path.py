"""The predict path: a cached model answers without touching the database, but only for the
tenant that owns it; bodies are parsed by pydantic's JSON parser with FastAPI's 422 errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session, sessionmaker

from api.bodies import parse_json
from api.errors import Conflict, NotFound
from api.schemas import HEIGHTS_EXAMPLE, PredictRequest
from dlmodels.builder import build_model
from dlmodels.serialize import sha256, weights_to_bytes
from dlmodels.spec import JobSpec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    data = tmp_path_factory.mktemp("predict")
    env = {**os.environ, "TAAS_DATA_DIR": str(data)}
    env.pop("TAAS_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    from api.db import make_engine

    engine = make_engine(f"sqlite:///{data / 'taas.db'}")
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


class Counting:
    """The real session factory, counting the sessions opened through it."""

    def __init__(self, inner: sessionmaker[Session]) -> None:
        self.inner, self.opened = inner, 0

    def __call__(self) -> Session:
        self.opened += 1
        return self.inner()


def _add_job(sessions: sessionmaker[Session], *, tenant: str, status: str) -> str:
    from api.models import Job, JobWeights, new_id

    spec = JobSpec.model_validate(HEIGHTS_EXAMPLE)
    model = build_model(spec.model, loss=spec.training.loss)
    weights = weights_to_bytes(model)
    job_id = new_id()
    with sessions() as session:
        session.add(Job(id=job_id, tenant=tenant, name="heights", status=status,
                        spec=spec.model_dump(mode="json", exclude_none=True), summary={},
                        epochs=1, weights_sha256=sha256(weights)))
        session.flush()
        session.add(JobWeights(job_id=job_id, data=weights, sha256=sha256(weights)))
        session.commit()
    return job_id


def _predict(sessions: Any, job_id: str, tenant: str, cache: Any) -> dict[str, Any]:
    from api.services import predict

    loaded = predict.cached_model(sessions, job_id=job_id, tenant=tenant, cache=cache)
    out: dict[str, Any] = json.loads(predict.predict(loaded, [[80.0], [65.0]]))
    return out


def test_a_cached_model_answers_without_the_database(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="succeeded")
    counting, cache = Counting(sessions), ModelCache(4)
    first = _predict(counting, job_id, "a", cache)
    assert counting.opened == 1
    for _ in range(3):
        assert _predict(counting, job_id, "a", cache) == first
    assert counting.opened == 1
    assert len(first["predictions"]) == 2 and "labels" not in first


def test_another_tenant_never_gets_a_cached_model(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="succeeded")
    cache = ModelCache(4)
    _predict(sessions, job_id, "a", cache)
    with pytest.raises(NotFound):
        _predict(sessions, job_id, "b", cache)
    assert _predict(sessions, job_id, "a", cache)["predictions"]


def test_only_succeeded_jobs_predict(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="running")
    with pytest.raises(Conflict, match="running"):
        _predict(sessions, job_id, "a", ModelCache(4))


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    from api.services.predict import LoadedModel, ModelCache

    cache = ModelCache(2)
    entry = LoadedModel(None, None, "")  # type: ignore[arg-type]
    for key in ("a", "b"):
        cache.put(key, entry)
    assert cache.get("a") is entry  # "b" is now the least recently used
    cache.put("c", entry)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is entry


@pytest.mark.parametrize(("raw", "loc", "kind"), [
    (b'{"inputs": [[1.0]]', [], "json_invalid"),
    (b'{"inputs": []}', ["inputs"], "too_short"),
    (b'{"inputs": [[1]], "extra": 1}', ["extra"], "extra_forbidden"),
    (b'{}', ["inputs"], "missing"),
])
def test_bodies_fail_as_fastapi_validation_errors(raw: bytes, loc: list[Any], kind: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_json(PredictRequest, raw)
    error = caught.value.errors()[0]
    assert error["type"] == kind
    if kind != "json_invalid":
        assert list(error["loc"]) == ["body", *loc]


def test_bodies_parse_like_json() -> None:
    assert parse_json(PredictRequest, b'{"inputs": [[1.5], [2]]}').inputs == [[1.5], [2]]
