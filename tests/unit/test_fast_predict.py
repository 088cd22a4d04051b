"""The predict hot path (api.fast_predict): it answers a cached model's predictions itself,
with the same bytes the route would send, and hands everything else to the route (the inner
app here records what reaches it), with the body replayed when it already read it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from api.fast_predict import MODEL_PREDICT_PATH, PREDICT_PATH, PredictFastPath
from api.middleware import Receive, RequestGuard, Scope, Send
from api.services.predict import LoadedModel, ModelCache, forward_cost, predict
from dlmodels.builder import build_model
from dlmodels.spec import JobSpec
from tests.npy import npy_bytes

SPEC = JobSpec.model_validate({
    "model": {"input_shape": [2], "layers": [{"type": "dense", "units": 3,
                                              "activation": "softmax"}]},
    "training": {"optimizer": "sgd", "loss": "cross_entropy", "epochs": 1},
    "data": {"inline": {"x": [[0.0, 0.0]], "y": [0]}}})


class Route:
    """Stands in for FastAPI: records each request and the body it could read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"route"})


@pytest.fixture
def loaded() -> LoadedModel:
    torch.manual_seed(0)
    model = build_model(SPEC.model, loss=SPEC.training.loss)
    return LoadedModel(model, SPEC, "a", forward_cost(model, SPEC))


def _app(route: Route, loaded: LoadedModel, tenant: str = "a") -> RequestGuard:
    cache = ModelCache(4)
    cache.put("job1", loaded)
    return RequestGuard(PredictFastPath(route, cache=cache), max_bytes=10**6,
                        max_upload_bytes=10**6, authenticate=lambda _authorization: tenant)


def _post(app: Any, path: str, content: bytes | AsyncIterator[bytes],
          media: str = "application/json") -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, content=content, headers={"content-type": media})
    return asyncio.run(call())


INPUTS = [[0.5, -1.0], [2.0, 0.25]]


@pytest.mark.parametrize(("body", "media"), [
    (json.dumps({"inputs": INPUTS}).encode(), "application/json"),
    (npy_bytes(np.array(INPUTS, dtype=np.float32)), "application/x-npy"),
    (npy_bytes(np.array(INPUTS, dtype=np.float64)), "application/x-npy"),
])
def test_a_cached_model_answers_without_the_route(loaded: LoadedModel, body: bytes,
                                                  media: str) -> None:
    route = Route()
    response = _post(_app(route, loaded), "/v1/jobs/job1/predict", body, media)
    assert route.bodies == []
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == predict(loaded, INPUTS)  # the route's own answer, byte for byte
    assert set(response.json()) == {"predictions", "labels"}


def test_a_large_json_body_is_answered_too(loaded: LoadedModel) -> None:
    from api.fast_predict import INLINE_BODY_BYTES

    rows = np.random.default_rng(0).random((2000, 2)).round(4).tolist()
    body = json.dumps({"inputs": rows}).encode()
    assert len(body) > INLINE_BODY_BYTES  # parsed in a worker thread, not on the event loop
    route = Route()
    response = _post(_app(route, loaded), "/v1/jobs/job1/predict", body)
    assert (response.status_code, route.bodies) == (200, [])
    assert response.content == predict(loaded, rows)


@pytest.mark.parametrize(("body", "media"), [
    (b'{"inputs": [[1.0]]}', "application/json"),  # wrong shape
    (b'{"inputs": [[1.0, 2.0]], "x": 1}', "application/json"),  # not the schema
    (b'{"inputs": [[NaN, 1.0]]}', "application/json"),
    (b"\x93NUMPY garbage", "application/x-npy"),
])
def test_a_body_the_route_would_refuse_is_replayed_to_it(loaded: LoadedModel, body: bytes,
                                                         media: str) -> None:
    route = Route()
    response = _post(_app(route, loaded), "/v1/jobs/job1/predict", body, media)
    assert (response.status_code, route.bodies) == (299, [body])


def test_another_tenant_an_unknown_job_and_other_paths_go_to_the_route(
        loaded: LoadedModel) -> None:
    body = json.dumps({"inputs": INPUTS}).encode()
    route = Route()
    assert _post(_app(route, loaded, tenant="b"), "/v1/jobs/job1/predict", body).status_code \
        == 299
    app = _app(route, loaded)
    for path in ("/v1/jobs/job2/predict", "/v1/jobs/job1/predict/x", "/v1/jobs/job1"):
        assert _post(app, path, body).status_code == 299
    assert route.bodies == [body] * 4


def test_a_chunked_body_goes_to_the_route_unread(loaded: LoadedModel) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"inputs": '
        yield json.dumps(INPUTS).encode() + b"}"

    route = Route()
    assert _post(_app(route, loaded), "/v1/jobs/job1/predict", chunks()).status_code == 299
    assert route.bodies == [json.dumps({"inputs": INPUTS}).encode()]


def test_the_pattern_is_the_routes_path() -> None:
    from api.main import app

    assert "post" in app.openapi()["paths"]["/v1/jobs/{job_id}/predict"]
    match = PREDICT_PATH.fullmatch("/v1/jobs/{job_id}/predict")
    assert match is not None and match["job_id"] == "{job_id}"
    paths = app.openapi()["paths"]
    for path, version, alias in (("/v1/models/heights/predict", None, None),
                                 ("/v1/models/heights/versions/12/predict", "12", None),
                                 ("/v1/models/heights/aliases/champion/predict", None,
                                  "champion")):
        template = path.replace("heights", "{name}").replace("12", "{version}") \
            .replace("champion", "{alias}")
        assert "post" in paths[template], template
        found = MODEL_PREDICT_PATH.fullmatch(path)
        assert found is not None and found["name"] == "heights"
        assert (found["version"], found["alias"]) == (version, alias)
    assert MODEL_PREDICT_PATH.fullmatch("/v1/models/heights/versions/x/predict") is None


def test_predictions_read_back_as_the_exact_float32_outputs(loaded: LoadedModel) -> None:
    from dlmodels.training import predict as forward

    x = np.random.default_rng(1).normal(size=(50, 2)).astype(np.float32)
    answer = json.loads(predict(loaded, x))
    outputs, labels = forward(loaded.model, torch.from_numpy(x), "cross_entropy")
    assert labels is not None
    np.testing.assert_array_equal(np.array(answer["predictions"], dtype=np.float32),
                                  outputs.numpy())
    assert answer["labels"] == labels.tolist()
