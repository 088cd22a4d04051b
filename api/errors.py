"""One error model: a few exception classes, one JSON shape, handlers registered once.

Every error answers `{"error": {"type", "message", "loc"?}}`; `loc` is the path into the
request body. Bugs still surface as 500s (logged with their traceback), never disguised as a
user's mistake.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.suggestions import hint, json_position
from dlmodels.errors import SpecError

log = logging.getLogger("taas.api")


class ServiceError(Exception):
    status_code = 400
    type = "bad_request"

    def __init__(self, message: str, loc: Sequence[str | int] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.loc = list(loc) if loc is not None else None
        self.headers = headers


class NotFound(ServiceError):
    status_code, type = 404, "not_found"


class Conflict(ServiceError):
    status_code, type = 409, "conflict"


class InvalidInput(ServiceError):
    status_code, type = 422, "invalid_input"


class PayloadTooLarge(ServiceError):
    status_code, type = 413, "payload_too_large"


class Unauthorized(ServiceError):
    status_code, type = 401, "unauthorized"


class TooManyRequests(ServiceError):
    status_code, type = 429, "too_many_requests"


class Unavailable(ServiceError):
    status_code, type = 503, "unavailable"


class DatabaseUnavailable(ServiceError):
    status_code, type = 503, "database_unavailable"

    def __init__(self) -> None:
        super().__init__("the database is unreachable; retry shortly",
                         headers={"Retry-After": "2"})


def error_body(type_: str, message: str, loc: Sequence[str | int] | None = None,
               **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"type": type_, "message": message}
    if loc is not None:
        error["loc"] = list(loc)
    return {"error": error | extra}


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None,
          request: Request | None = None) -> JSONResponse:
    if request is not None and is_v2(request.url.path):
        status, body = v2_error(status, body["error"]["message"])
    return JSONResponse(body, status_code=status, headers=headers)


def is_v2(path: str) -> bool:
    """The Open Inference Protocol's routes, whose errors are `{"error": "<message>"}`."""
    return path == "/v2" or path.startswith("/v2/")


def v2_error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """The protocol's error: a request it cannot carry out is 400 (ours say 422)."""
    return (400 if status == 422 else status), {"error": message}


def clean_loc(loc: Sequence[str | int], body: Any) -> list[str | int]:
    """Drop FastAPI's leading "body" and pydantic's union tags (e.g. the "dense" in
    ["model", "layers", 0, "dense", "units"]), so loc is a real path into the request body."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    path: list[str | int] = []
    node = body
    for part in parts:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue  # a discriminator tag, not a key
        path.append(part)
        node = _child(node, part)
    return path


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


def _json_syntax_error(error: dict[str, Any], document: Any) -> dict[str, Any]:
    """A body that is not JSON has no path into it (loc []); it has a line and a column."""
    reason = str((error.get("ctx") or {}).get("error") or error["msg"])
    reason = reason.removeprefix("Invalid JSON: ")
    position = json_position(error, document)
    if position is None:
        return {"loc": [], "message": f"body: invalid JSON: {reason}", "type": "json_invalid"}
    line, column = position
    return {"loc": [], "type": "json_invalid", "line": line, "column": column,
            "message": f"body: invalid JSON at line {line}, column {column}: {reason}"}


def _body_schema(request: Request) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The JSON schema of the route's request body (from the app's OpenAPI document), and the
    components its references point into."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None)
    document = request.app.openapi()
    operation = document.get("paths", {}).get(path, {}).get(request.method.lower(), {})
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    return content.get("schema"), document.get("components", {}).get("schemas", {})


def _validation_message(error: dict[str, Any], loc: list[str | int]) -> str:
    where = ".".join(str(p) for p in loc) or "body"
    return f"{where}: {error['msg']}"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _json(exc.status_code, error_body(exc.type, exc.message, exc.loc), exc.headers,
                     request)

    @app.exception_handler(SpecError)
    async def spec_error(request: Request, exc: SpecError) -> JSONResponse:
        return _json(422, error_body("invalid_spec", exc.message, exc.loc), request=request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        schema, components = _body_schema(request)
        for error in exc.errors():
            if error["type"] == "json_invalid":
                errors.append(_json_syntax_error(error, exc.body))
                continue
            loc = clean_loc(error["loc"], exc.body)
            message = _validation_message(error, loc) + \
                hint(error, loc, exc.body, schema, components)
            errors.append({"loc": loc, "message": message, "type": error["type"]})
        first = errors[0]
        extra = {k: first[k] for k in ("line", "column") if k in first}
        return _json(422, error_body("validation_error", first["message"], first["loc"],
                                     errors=errors, **extra), request=request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                 415: "unsupported_media_type"}
        message = str(exc.detail)
        if exc.status_code in (404, 405) and message in ("Not Found", "Method Not Allowed"):
            # No route matched: say what was asked and where the routes are listed.
            message = f"{message}: {request.method} {request.url.path} is not an operation " \
                      "of this API; every operation is listed at /docs"
        return _json(exc.status_code, error_body(kinds.get(exc.status_code, "http_error"),
                                                 message), getattr(exc, "headers", None),
                     request)

    @app.exception_handler(OperationalError)
    async def database_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return await service_error(request, DatabaseUnavailable())

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _json(500, error_body("internal_error",
                                     f"internal error ({type(exc).__name__}); see the API log"),
                     request=request)
