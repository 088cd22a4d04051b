"""Request guards that run before any body is parsed: size (413) and media type (415).

A pure ASGI middleware, so a too-large body is refused from its Content-Length before it is
read, and a chunked body as soon as the bytes read pass the limit. It also turns a bug into a
logged 500 here, because Starlette's own catch-all re-raises after answering and uvicorn then
drops the client's keep-alive connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from api.bodies import NPY_TYPE, media_type
from api.errors import ServiceError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("taas.api")

# Routes that take other bodies than JSON (they check their media types themselves).
RAW_BODY_PATHS = ("/v1/datasets",)
JSON_TYPES = ("application/json",)
# Predict also takes the inputs as a .npy file (api.bodies.NPY_TYPE).
PREDICT_TYPES = (*JSON_TYPES, NPY_TYPE)


# Evaluate also takes the data as an NPZ file holding arrays x and y (numpy.savez).
EVALUATE_TYPES = (*JSON_TYPES, "application/x-npz")
def _is_v2(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


def _authenticated(path: str) -> bool:
    """/v1 and the Open Inference Protocol's /v2, except its health probes."""
    return path.startswith("/v1/") or (_is_v2(path) and not path.startswith("/v2/health/"))


def _media_types(path: str) -> tuple[tuple[str, ...], str]:
    """The media types a JSON route takes, and how a 415 names them."""
    if path.endswith("/evaluate"):
        return EVALUATE_TYPES, " or the data as an NPZ file (content-type: application/x-npz)"
    if path.endswith("/predict"):
        return PREDICT_TYPES, (" or the inputs as a .npy file (content-type: "
                               f"{NPY_TYPE})")
    return JSON_TYPES, ""


class RequestGuard:
    def __init__(self, app: ASGIApp, *, max_bytes: int, max_upload_bytes: int,
                 authenticate: Callable[[str | None], str],
                 remembered: Callable[[str | None], str | None] = lambda _: None,
                 within_rate: Callable[[str, str], None] = lambda _tenant, _path: None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.authenticate = authenticate  # may query the database: run in a thread
        self.remembered = remembered  # memory only: None when `authenticate` must answer
        self.within_rate = within_rate  # (tenant, path): raises TooManyRequests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if _authenticated(scope["path"]) and not await self._tenant(scope, headers, send):
            return
        if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self._guarded(scope, receive, send)
            return
        upload = scope["path"].startswith(RAW_BODY_PATHS)
        limit = self.max_upload_bytes if upload else self.max_bytes
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _refuse(send, 413, "payload_too_large",
                          f"the request body is larger than {limit} bytes",
                          v2=_is_v2(scope["path"]))
            return
        media = media_type(headers.get("content-type", ""))
        has_body = length not in (None, "0") or "chunked" in headers.get("transfer-encoding", "")
        accepted, also = _media_types(scope["path"])
        # V2 infer reads its own media types (JSON, or JSON plus binary tensors).
        if has_body and not upload and media not in accepted and not _is_v2(scope["path"]):
            await _refuse(send, 415, "unsupported_media_type",
                          f"this API takes JSON bodies (content-type: application/json){also}, "
                          f"not {media or 'an untyped body'}")
            return
        await self._guarded(scope, self._limited(receive, limit), send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as error:
            if started:  # half an answer is out; all that is left is to end the connection
                raise
            log.exception("unhandled error", exc_info=error)
            await _refuse(send, 500, "internal_error",
                          f"internal error ({type(error).__name__}); see the API log",
                          v2=_is_v2(scope["path"]))

    async def _tenant(self, scope: Scope, headers: dict[str, str], send: Send) -> bool:
        """Who is calling, known before any body is read (so a bad key is 401 whatever the
        body); stored in the request state for the routes."""
        authorization = headers.get("authorization")
        try:
            tenant = self.remembered(authorization)
            if tenant is None:
                tenant = await anyio.to_thread.run_sync(self.authenticate, authorization)
            self.within_rate(tenant, scope["path"])
        except ServiceError as error:
            await _refuse(send, error.status_code, error.type, error.message, error.headers,
                          v2=_is_v2(scope["path"]))
            return False
        except SQLAlchemyError:
            await _refuse(send, 503, "database_unavailable",
                          "the database is unreachable; retry shortly", {"Retry-After": "2"},
                          v2=_is_v2(scope["path"]))
            return False
        scope.setdefault("state", {})["tenant"] = tenant
        return True

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the request body is larger than {limit} bytes")
            return message

        return limited


async def _refuse(send: Send, status: int, kind: str, message: str,
                  headers: dict[str, str] | None = None, *, v2: bool = False) -> None:
    error: Any = message if v2 else {"type": kind, "message": message}
    body = json.dumps({"error": error}).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
