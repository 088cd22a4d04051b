"""Typed errors: one class per error `type` the API answers, plus `ConnectionFailed`.

Every API error carries the API's `type`, `message` and `loc` (the path into the request
body, or None) and the HTTP `status`; catch `APIError` for all of them, `TaasError` for those
and a failed connection.
"""

from __future__ import annotations

from typing import Any


class TaasError(Exception):
    """Anything the client raises on purpose."""

    type = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConnectionFailed(TaasError):
    """The API did not answer at `url` (refused, unreachable, timed out)."""

    type = "connection_failed"

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the taas API at {url} ({reason}); is it running? "
                         "`taas up` starts one locally, TAAS_URL points elsewhere")
        self.url = url
        self.reason = reason


class APIError(TaasError):
    """The API answered with an error: `{"error": {"type", "message", "loc"?}}`."""

    status = 0

    def __init__(self, message: str, *, type: str | None = None,
                 loc: list[str | int] | None = None, status: int | None = None,
                 body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        if type is not None:
            self.type = type
        if status is not None:
            self.status = status
        self.loc = loc
        self.body = body or {}

    def __str__(self) -> str:
        where = ".".join(str(part) for part in self.loc) if self.loc else ""
        return f"{self.type}: {where + ': ' if where and where not in self.message else ''}" \
               f"{self.message}"


class BadRequest(APIError):
    status, type = 400, "bad_request"


class Unauthorized(APIError):
    status, type = 401, "unauthorized"


class NotFound(APIError):
    status, type = 404, "not_found"


class MethodNotAllowed(APIError):
    status, type = 405, "method_not_allowed"


class Conflict(APIError):
    status, type = 409, "conflict"


class PayloadTooLarge(APIError):
    status, type = 413, "payload_too_large"


class UnsupportedMediaType(APIError):
    status, type = 415, "unsupported_media_type"


class InvalidRequest(APIError):
    """A 422: the request (a spec, inputs, a dataset) cannot be used; `loc` says where."""

    status, type = 422, "invalid_input"


class InvalidInput(InvalidRequest):
    type = "invalid_input"


class ValidationError(InvalidRequest):
    """The body does not match the schema; `errors` lists every problem."""

    type = "validation_error"

    @property
    def errors(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.body.get("errors", [])
        return found


class InvalidSpec(InvalidRequest):
    type = "invalid_spec"


class TooManyRequests(APIError):
    status, type = 429, "too_many_requests"

    @property
    def retry_after(self) -> float | None:
        value = self.body.get("retry_after")
        return float(value) if value is not None else None


class InternalError(APIError):
    status, type = 500, "internal_error"


class ArtifactIntegrity(InternalError):
    type = "artifact_integrity"


class Unavailable(APIError):
    status, type = 503, "unavailable"


class DatabaseUnavailable(Unavailable):
    type = "database_unavailable"


_BY_TYPE: dict[str, type[APIError]] = {cls.type: cls for cls in (
    BadRequest, Unauthorized, NotFound, MethodNotAllowed, Conflict, PayloadTooLarge,
    UnsupportedMediaType, InvalidInput, ValidationError, InvalidSpec, TooManyRequests,
    InternalError, ArtifactIntegrity, Unavailable, DatabaseUnavailable)}
_BY_STATUS: dict[int, type[APIError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound,
                                         405: MethodNotAllowed, 409: Conflict,
                                         413: PayloadTooLarge, 415: UnsupportedMediaType,
                                         422: InvalidRequest, 429: TooManyRequests,
                                         500: InternalError, 503: Unavailable}


def from_response(status: int, body: Any, headers: dict[str, str] | None = None) -> APIError:
    """The typed error for an error answer (any shape: a proxy's HTML page is still typed by
    its status)."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        cls = _BY_STATUS.get(status, APIError)
        return cls(f"HTTP {status}: {str(body)[:200]}", status=status)
    kind = str(error.get("type", "error"))
    cls = _BY_TYPE.get(kind) or _BY_STATUS.get(status, APIError)
    extra = dict(error)
    retry_after = (headers or {}).get("retry-after")
    if retry_after is not None:
        extra["retry_after"] = retry_after
    return cls(str(error.get("message", "")), type=kind, loc=error.get("loc"), status=status,
               body=extra)


class JobFailed(TaasError):
    """`Client.fit` ended with a job that did not succeed; `job` is that job."""

    type = "job_failed"

    def __init__(self, job: Any) -> None:
        error = job.error or {}
        detail = f": {error.get('type')}: {error.get('message')}" if error else ""
        super().__init__(f"job {job.id} {job.status}{detail}")
        self.job = job
