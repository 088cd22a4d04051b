"""The API's hot read paths: a cached model answers without touching the database, but only
for the tenant that owns it; a finished job's status is kept, a running one's never; bodies
are parsed by pydantic's JSON parser with FastAPI's 422 errors."""

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
from sqlalchemy import event
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
    """The API's own session factories on a migrated SQLite database."""
    from api import db
    from api.settings import get_settings

    data = tmp_path_factory.mktemp("predict")
    env = {**os.environ, "TAAS_DATA_DIR": str(data)}
    env.pop("TAAS_DATABASE_URL", None)
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    saved = {k: os.environ.get(k) for k in ("TAAS_DATA_DIR", "TAAS_DATABASE_URL")}
    os.environ["TAAS_DATA_DIR"] = str(data)
    os.environ.pop("TAAS_DATABASE_URL", None)
    get_settings.cache_clear()
    db.reset()
    yield db.get_sessionmaker()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    db.reset()


class Queries:
    """Counts the SQL statements the API's read engine runs."""

    def __init__(self) -> None:
        from api.db import get_read_sessionmaker

        self.count = 0
        engine = get_read_sessionmaker().kw["bind"]
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


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


def _predict(job_id: str, tenant: str, cache: Any) -> dict[str, Any]:
    from api.services import predict

    loaded = predict.cached_model(job_id=job_id, tenant=tenant, cache=cache)
    out: dict[str, Any] = json.loads(predict.predict(loaded, [[80.0], [65.0]]))
    return out


def test_a_cached_model_answers_without_the_database(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="succeeded")
    queries, cache = Queries(), ModelCache(4)
    first = _predict(job_id, "a", cache)
    loading = queries.count
    assert loading >= 1
    for _ in range(3):
        assert _predict(job_id, "a", cache) == first
    assert queries.count == loading
    assert len(first["predictions"]) == 2 and "labels" not in first


def test_another_tenant_never_gets_a_cached_model(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="succeeded")
    cache = ModelCache(4)
    _predict(job_id, "a", cache)
    with pytest.raises(NotFound):
        _predict(job_id, "b", cache)
    assert _predict(job_id, "a", cache)["predictions"]


def test_only_succeeded_jobs_predict(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import ModelCache

    job_id = _add_job(sessions, tenant="a", status="running")
    with pytest.raises(Conflict, match="running"):
        _predict(job_id, "a", ModelCache(4))


@pytest.mark.parametrize(("status", "kept"), [("queued", False), ("running", False),
                                              ("succeeded", True), ("failed", True),
                                              ("cancelled", True)])
def test_only_finished_jobs_answers_are_kept(sessions: sessionmaker[Session], status: str,
                                             kept: bool) -> None:
    from api.cache import LRUCache
    from api.services.jobs import FinishedJob, finished_answer, read_job
    from api.settings import get_settings

    job_id = _add_job(sessions, tenant="a", status=status)
    _set_summary(sessions, job_id)
    finished = LRUCache[FinishedJob](8)
    body = json.loads(read_job(job_id=job_id, tenant="a", settings=get_settings(),
                               finished=finished))
    assert body["id"] == job_id and body["status"] == status
    known = finished.get(job_id)
    assert (known is not None) == kept
    if known is not None:
        assert known.tenant == "a" and json.loads(known.body) == body
    kept_answer = finished_answer(finished, job_id=job_id, tenant="a")
    assert (kept_answer is not None) == kept
    assert finished_answer(finished, job_id=job_id, tenant="b") is None
    with pytest.raises(NotFound):
        read_job(job_id=job_id, tenant="b", settings=get_settings(), finished=finished)


def _set_summary(sessions: sessionmaker[Session], job_id: str) -> None:
    from api.models import Job
    from dlmodels.builder import summarize

    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.summary = summarize(JobSpec.model_validate(HEIGHTS_EXAMPLE).model).model_dump()
        session.commit()


def test_the_cache_is_bounded_least_recently_used_first() -> None:
    from api.services.predict import LoadedModel, ModelCache

    cache = ModelCache(2)
    entry = LoadedModel(None, None, "", 0.0)  # type: ignore[arg-type]
    for key in ("a", "b"):
        cache.put(key, entry)
    assert cache.get("a") is entry  # "b" is now the least recently used
    cache.put("c", entry)
    assert len(cache) == 2 and cache.get("b") is None and cache.get("a") is entry


def test_quick_models_are_timed_at_load(sessions: sessionmaker[Session]) -> None:
    from api.services.predict import INLINE_SECONDS, PROBE_ROWS, ModelCache, cached_model

    job_id = _add_job(sessions, tenant="a", status="succeeded")
    loaded = cached_model(job_id=job_id, tenant="a", cache=ModelCache(1))
    # The heights MLP: a forward pass takes some microseconds, a batch a little more.
    cost = loaded.cost
    assert 0 < cost.one < INLINE_SECONDS and cost.many > 0
    assert loaded.is_quick(1)
    too_many = max(int(INLINE_SECONDS * PROBE_ROWS / cost.many) + 1, PROBE_ROWS + 1)
    assert not loaded.is_quick(too_many)


def test_forward_cost_interpolates_then_never_makes_rows_free() -> None:
    from api.services.predict import INLINE_SECONDS, PROBE_ROWS, ForwardCost, LoadedModel

    cost = ForwardCost(one=1e-4, many=1e-4 + (PROBE_ROWS - 1) * 1e-5)  # 10 us a row
    assert cost.seconds(1) == pytest.approx(1e-4)
    assert cost.seconds(11) == pytest.approx(2e-4)
    assert cost.seconds(PROBE_ROWS * 2) == pytest.approx(2 * cost.many)
    # A batch timed no slower than one row (timer noise on a busy machine): still not free.
    noisy = ForwardCost(one=2e-4, many=2e-4)
    assert noisy.seconds(PROBE_ROWS) == pytest.approx(2e-4)
    assert noisy.seconds(10_000) > 0.05
    loaded = LoadedModel(model=None, spec=None, tenant="", cost=noisy)  # type: ignore[arg-type]
    assert loaded.is_quick(PROBE_ROWS)
    assert not loaded.is_quick(int(INLINE_SECONDS * PROBE_ROWS / 2e-4) + 1)


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
