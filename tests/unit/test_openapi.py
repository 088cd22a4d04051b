"""The OpenAPI schema describes the errors the app really answers.

No FastAPI HTTPValidationError: every 4xx/5xx an operation declares is api.schemas.ErrorBody,
every /v1 operation declares the errors the request guard and its parameters can cause, and
real error responses (the app in-process, on a temporary SQLite database) are declared for
their operation, with their headers, and validate against ErrorBody.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from api.schemas import ErrorBody

REF = "#/components/schemas/"
MLP = {"input_shape": [2], "layers": [{"type": "dense", "units": 1}]}


def _clear_caches() -> None:
    """Forget the settings, engines and session factories (every lru_cache in api.db and
    api.settings), so the next app reads the TAAS_* variables again."""
    import api.db
    import api.settings

    if api.db.get_engine.cache_info().currsize:
        api.db.get_engine().dispose()
    for module in (api.db, api.settings):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


@pytest.fixture
def make_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[..., TestClient]]:
    """An app built by api.main.create_app from TAAS_* variables (one app per test: the
    settings, engine and session factory are process-wide caches)."""
    threads = torch.get_num_threads()  # create_app sets 1 for the process

    def make(*, tables: bool = True, **env: str) -> TestClient:
        for key in [k for k in os.environ if k.startswith("TAAS_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("TAAS_DATA_DIR", str(tmp_path / "data"))
        for key, value in env.items():
            monkeypatch.setenv(f"TAAS_{key.upper()}", value)
        _clear_caches()
        from api.db import get_engine
        from api.main import create_app
        from api.models import Base

        if tables:
            Base.metadata.create_all(get_engine())
        app = create_app()
        torch.set_num_threads(threads)
        return TestClient(app, raise_server_exceptions=False)

    yield make
    _clear_caches()
    torch.set_num_threads(threads)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_request_bytes="1024")


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    threads = torch.get_num_threads()
    from api.main import app  # built at import; the schema needs no database

    torch.set_num_threads(threads)
    _clear_caches()
    return app.openapi()


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield path, method, operation


def _operation_for(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in schema["paths"].items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in operations:
            operation: dict[str, Any] = operations[method.lower()]
            return operation
    raise AssertionError(f"{method} {path} is not in the schema")


def _error_ref(response: dict[str, Any]) -> str:
    return str(response["content"]["application/json"]["schema"].get("$ref"))


def assert_documented_error(client: TestClient, response: httpx.Response,
                            error_type: str | None = None) -> dict[str, Any]:
    """The response's status is declared for its operation (in the schema the app serves),
    as ErrorBody, with its required headers; the body is an ErrorBody exactly."""
    assert response.status_code >= 400, response.text
    schema = client.get("/openapi.json").json()
    request = response.request
    declared = _operation_for(schema, request.method, request.url.path)["responses"]
    code = str(response.status_code)
    assert code in declared, (f"{request.method} {request.url.path} answered {code}, "
                              f"which it does not declare ({sorted(declared)})")
    assert _error_ref(declared[code]) == REF + "ErrorBody"
    for header, spec in declared[code].get("headers", {}).items():
        if spec.get("required"):
            assert header in response.headers, f"{code} without its {header} header"
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    ErrorBody.model_validate(body, strict=True)  # extra="forbid": no undeclared field
    if error_type is not None:
        assert body["error"]["type"] == error_type, body
    return dict(body["error"])


# --- the schema ---------------------------------------------------------------------------

def test_fastapi_validation_models_are_gone(schema: dict[str, Any]) -> None:
    components = schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        assert name not in components
        assert REF + name not in json.dumps(schema)


def test_the_error_components_are_the_models(schema: dict[str, Any]) -> None:
    published = schema["components"]["schemas"]
    expected = ErrorBody.model_json_schema(ref_template=REF + "{model}", mode="serialization")
    for name, definition in expected.pop("$defs").items():
        assert published[name] == definition
    assert published["ErrorBody"] == expected


def test_every_v1_operation_declares_its_errors(schema: dict[str, Any]) -> None:
    v1 = [(p, m, o) for p, m, o in _operations(schema) if p.startswith("/v1/")]
    assert len(v1) >= 9
    for path, method, operation in v1:
        label = f"{method.upper()} {path}"
        responses = operation["responses"]
        takes_input = operation.get("parameters") or operation.get("requestBody")
        expected = {"401", "429", "503"} | ({"422"} if takes_input else set())
        if method == "post":
            expected |= {"413", "415"}
        if "{" in path:
            expected.add("404")
        assert expected <= set(responses), f"{label} lacks {sorted(expected - set(responses))}"
        assert "Retry-After" in responses["429"]["headers"], label
        assert "Retry-After" in responses["503"]["headers"], label
        assert "WWW-Authenticate" in responses["401"]["headers"], label


def test_every_declared_error_is_an_error_body(schema: dict[str, Any]) -> None:
    for path, method, operation in _operations(schema):
        for code, response in operation["responses"].items():
            if int(code) < 400 or (path, code) == ("/readyz", "503"):  # readyz: a Health
                continue
            assert _error_ref(response) == REF + "ErrorBody", f"{method} {path} {code}"


# --- real error responses -----------------------------------------------------------------

def test_not_found(client: TestClient) -> None:
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/metrics", "/v1/datasets/nope"):
        assert_documented_error(client, client.get(path), "not_found")
    for action in ("cancel", "predict"):
        response = client.post(f"/v1/jobs/nope/{action}", json={"inputs": [[1, 2]]}
                               if action == "predict" else None)
        assert_documented_error(client, response, "not_found")


def test_validation_errors_list_every_problem(client: TestClient) -> None:
    response = client.post("/v1/specs/validate", json={"model": {"layers": "x"}, "extra": 1})
    error = assert_documented_error(client, response, "validation_error")
    assert len(error["errors"]) >= 2
    assert error["loc"] == error["errors"][0]["loc"]
    response = client.post("/v1/jobs", json={"model": MLP})
    assert_documented_error(client, response, "validation_error")


def test_validation_errors_in_parameters_and_unreadable_bodies(client: TestClient) -> None:
    error = assert_documented_error(client, client.get("/v1/jobs?limit=0"), "validation_error")
    assert error["loc"] == ["query", "limit"]
    assert_documented_error(client, client.get("/v1/jobs?status=done"), "validation_error")
    response = client.post("/v1/jobs", json={}, headers={"Idempotency-Key": "k" * 201})
    assert_documented_error(client, response, "validation_error")
    response = client.post("/v1/specs/validate", content=b"{",
                           headers={"content-type": "application/json"})
    assert assert_documented_error(client, response, "validation_error")["loc"] == []
    for path in ("/v1/specs/validate", "/v1/jobs"):  # not UTF-8: FastAPI answers 400
        response = client.post(path, content=b'{"model": "\xff"}',
                               headers={"content-type": "application/json"})
        assert_documented_error(client, response)


def test_invalid_spec_and_invalid_input(client: TestClient) -> None:
    bad = {"input_shape": [2], "layers": [{"type": "conv2d", "filters": 1, "kernel_size": 3}]}
    error = assert_documented_error(client, client.post("/v1/specs/validate",
                                                        json={"model": bad}), "invalid_spec")
    assert error["loc"][:3] == ["model", "layers", 0]
    assert_documented_error(client, client.get("/v1/jobs?cursor=x"), "invalid_input")
    response = client.post("/v1/datasets", json={"x": [[1], [2]], "y": [1]})
    assert_documented_error(client, response, "invalid_input")


def test_media_type_and_size(client: TestClient) -> None:
    for path in ("/v1/specs/validate", "/v1/jobs", "/v1/datasets"):
        response = client.post(path, content=b"x,y\n1,2\n", headers={"content-type": "text/xml"})
        assert_documented_error(client, response, "unsupported_media_type")
    big = json.dumps({"model": MLP, "name": "x" * 2000})  # the limit here is 1024 bytes
    for path in ("/v1/specs/validate", "/v1/jobs", "/v1/jobs/nope/cancel"):
        response = client.post(path, content=big, headers={"content-type": "application/json"})
        assert_documented_error(client, response, "payload_too_large")


def _stored_job(status: str, **columns: Any) -> str:
    from api.db import session_scope
    from api.models import Job, JobWeights, new_id

    job_id = new_id()
    weights = columns.pop("weights", None)
    with session_scope() as session:
        session.add(Job(id=job_id, name="t", status=status, spec={}, summary={}, epochs=1,
                        **columns))
        if weights is not None:
            session.flush()
            session.add(JobWeights(job_id=job_id, data=weights, sha256="0" * 64))
    return job_id


def test_conflicts_and_broken_artifacts(client: TestClient) -> None:
    done = _stored_job("succeeded")
    response = client.post(f"/v1/jobs/{done}/cancel")
    assert_documented_error(client, response, "conflict")
    failed = _stored_job("failed")
    response = client.post(f"/v1/jobs/{failed}/predict", json={"inputs": [[1, 2]]})
    assert_documented_error(client, response, "conflict")
    tampered = _stored_job("succeeded", weights=b"not these", weights_sha256="0" * 64)
    response = client.post(f"/v1/jobs/{tampered}/predict", json={"inputs": [[1, 2]]})
    assert_documented_error(client, response, "artifact_integrity")


def test_unauthorized_and_rate_limited(make_client: Callable[..., TestClient]) -> None:
    client = make_client(api_keys="alice:secret", rate_limit="0.001", rate_burst="2")
    for path in ("/v1/jobs", "/v1/datasets/nope"):
        assert_documented_error(client, client.get(path), "unauthorized")
    response = client.post("/v1/specs/validate", json={"model": MLP},
                           headers={"Authorization": "Bearer wrong"})
    assert_documented_error(client, response, "unauthorized")
    alice = {"Authorization": "Bearer secret"}
    statuses = [client.get("/v1/jobs", headers=alice).status_code for _ in range(2)]
    assert statuses == [200, 200]
    for path in ("/v1/jobs", "/v1/jobs/nope"):
        assert_documented_error(client, client.get(path, headers=alice), "too_many_requests")


def test_database_unavailable(make_client: Callable[..., TestClient], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "taas.db"
    client = make_client(tables=False, database_url=f"sqlite:///{missing}")
    # api.auth caches "no stored keys" for a while: fresh, the route's query fails (the error
    # handler answers); stale, the request guard's auth query fails first.
    monkeypatch.setattr("api.auth._stored_cache", (time.monotonic(), False))
    assert_documented_error(client, client.get("/v1/jobs"), "database_unavailable")
    assert_documented_error(client, client.get("/v1/datasets/x"), "database_unavailable")
    monkeypatch.setattr("api.auth._stored_cache", (float("-inf"), False))
    assert_documented_error(client, client.get("/v1/jobs/x"), "database_unavailable")
    response = client.post("/v1/specs/validate", json={"model": MLP})
    assert_documented_error(client, response, "database_unavailable")
