"""The hot path of `POST /v1/jobs/{job_id}/predict` (and of predict by model name, version or
alias, resolved from the in-process api.directory), as a pure ASGI layer.

A prediction from a model already in memory needs no database and no dependency injection:
body -> array -> forward pass -> JSON. FastAPI's router, dependency solver and Request and
Response objects cost more per request than a small model's forward pass (bench B3), so this
layer answers those requests itself. It sits inside the request guard, which has already
authenticated the caller and checked the body's size and media type.

Everything else goes on to the FastAPI route, which stays the one definition of predict's
behaviour: a model not in memory yet (the route loads it), a chunked body, and any body the
route would refuse, which is replayed to it so its error is the documented one.
"""

from __future__ import annotations

import re
from typing import Any

import anyio.to_thread
import numpy as np
from fastapi.exceptions import RequestValidationError

from api.bodies import NPY_TYPE, media_type, parse_json, parse_npy
from api.directory import ModelDirectory, Ref
from api.errors import ServiceError
from api.middleware import ASGIApp, Message, Receive, Scope, Send
from api.schemas import PredictRequest
from api.services import predict
from api.services.predict import LoadedModel, ModelCache
from dlmodels.errors import SpecError

# The route's path, "/v1/jobs/{job_id}/predict" (a test checks they agree).
PREDICT_PATH = re.compile(r"/v1/jobs/(?P<job_id>[^/]+)/predict")
# "/v1/models/{name}/predict", ".../versions/{version}/predict", ".../aliases/{alias}/predict"
MODEL_PREDICT_PATH = re.compile(r"/v1/models/(?P<name>[^/]+)(?:/versions/(?P<version>[0-9]+)"
                                r"|/aliases/(?P<alias>[^/]+))?/predict")
JSON_HEADERS = [(b"content-type", b"application/json")]
INLINE_BODY_BYTES = 16_384  # a JSON body this small is parsed on the event loop (< 0.1 ms)


class PredictFastPath:
    def __init__(self, app: ASGIApp, *, cache: ModelCache,
                 directory: ModelDirectory | None = None) -> None:
        self.app = app
        self.cache = cache
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._cached_model(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        raw = await _read_body(receive)
        if raw is None:  # the client went away: nobody to answer
            return
        headers = dict(scope["headers"])
        npy = media_type(headers.get(b"content-type", b"").decode("latin-1")) == NPY_TYPE
        loaded, extra = found
        try:
            body = await answer(loaded, raw, npy=npy, extra=extra)
        except (ServiceError, SpecError, RequestValidationError):
            await self.app(scope, _replay(raw), send)  # the route answers with its own error
            return
        predict.counted(scope["state"], loaded, extra)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _cached_model(self, scope: Scope) -> tuple[LoadedModel, dict[str, Any] | None] | None:
        """The model this request predicts with (and the fields naming it by name), when this
        layer can answer it alone: a POST to predict with a Content-Length (so the guard's
        size check covered the whole body) for a model of the caller's tenant in memory."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        tenant = scope.get("state", {}).get("tenant")
        if tenant is None or not any(k == b"content-length" for k, _ in scope["headers"]):
            return None
        path, extra = scope["path"], None
        match = PREDICT_PATH.fullmatch(path)
        if match is not None:
            job_id = match["job_id"]
        else:
            by_name = self._by_name(path, tenant)
            if by_name is None:
                return None
            job_id, extra = by_name
        loaded = predict.cached(self.cache, job_id=job_id, tenant=tenant)
        return None if loaded is None else (loaded, extra)

    def _by_name(self, path: str, tenant: str) -> tuple[str, dict[str, Any]] | None:
        match = MODEL_PREDICT_PATH.fullmatch(path)
        if match is None or self.directory is None:
            return None
        ref: Ref = int(match["version"]) if match["version"] else match["alias"]
        found = self.directory.lookup(tenant, match["name"], ref)
        if found is None:
            return None
        job_id, version = found
        return job_id, {"model": match["name"], "version": version}


async def answer(loaded: LoadedModel, raw: bytes, *, npy: bool,
                 extra: dict[str, Any] | None = None) -> bytes:
    """A predict body's answer from a model in memory: parsed and run on the event loop when
    both are quick (a thread hop costs more than they do), else in one worker thread."""
    if not npy and len(raw) > INLINE_BODY_BYTES:
        return await anyio.to_thread.run_sync(_parse_and_predict, loaded, raw, npy, extra)
    inputs = parse_inputs(raw, npy=npy)
    if loaded.is_quick(len(inputs)):
        return predict.predict(loaded, inputs, extra)
    return await anyio.to_thread.run_sync(predict.predict, loaded, inputs, extra)


def parse_inputs(raw: bytes, *, npy: bool) -> list[Any] | np.ndarray:
    return parse_npy(raw) if npy else parse_json(PredictRequest, raw).inputs


def _parse_and_predict(loaded: LoadedModel, raw: bytes, npy: bool,
                       extra: dict[str, Any] | None) -> bytes:
    return predict.predict(loaded, parse_inputs(raw, npy=npy), extra)


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(raw: bytes) -> Receive:
    """A receive channel that gives the route the body already read, whole; asked again (the
    body is complete), it says the client is gone, as a server's would after the answer."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive
