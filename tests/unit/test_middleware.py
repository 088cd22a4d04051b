"""The request guard's catch-all: a bug answers a JSON 500 and the exception stops there, so
the server keeps the client's keep-alive connection (Starlette's own catch-all re-raises)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from api.middleware import Message, Receive, RequestGuard, Scope, Send


async def _buggy(scope: Scope, receive: Receive, send: Send) -> None:
    raise ZeroDivisionError("a bug")


async def _half_answer(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ZeroDivisionError("a bug after the answer started")


def _guard(app: Any) -> RequestGuard:
    return RequestGuard(app, max_bytes=1000, max_upload_bytes=1000,
                        authenticate=lambda _authorization: "")


async def _call(app: Any, method: str) -> httpx.Response:
    # ASGITransport re-raises whatever escapes the app: passing means nothing escaped.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.request(method, "/v1/anything",
                                    json={"x": 1} if method == "POST" else None)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bug_answers_500_in_the_error_shape_and_goes_no_further(
        method: str, caplog: pytest.LogCaptureFixture) -> None:
    response = asyncio.run(_call(_guard(_buggy), method))
    assert response.status_code == 500
    assert response.json() == {"error": {"type": "internal_error",
                                         "message": "internal error (ZeroDivisionError); "
                                                    "see the API log"}}
    assert "a bug" in caplog.text  # the traceback is logged for whoever runs the service


def test_a_bug_after_the_answer_started_still_propagates() -> None:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/x", "headers": []}
    with pytest.raises(ZeroDivisionError):
        asyncio.run(_guard(_half_answer)(scope, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]


def test_the_connection_stays_open_after_a_500() -> None:
    """Two requests over one socket to a real uvicorn serving the app's own stack (guard,
    error handlers, a route with a bug): both answered."""
    import socket
    import threading
    import time

    import uvicorn
    from fastapi import FastAPI

    from api.errors import install_error_handlers

    app = FastAPI()
    app.add_middleware(RequestGuard, max_bytes=1000, max_upload_bytes=1000,
                       authenticate=lambda _authorization: "")
    install_error_handlers(app)

    @app.get("/v1/x")
    def bug() -> None:
        raise ZeroDivisionError("a bug")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        request = b"GET /v1/x HTTP/1.1\r\nHost: t\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            answers = []
            for _ in range(2):
                conn.sendall(request)
                answers.append(_read_response(conn))
        assert all(a.startswith(b"HTTP/1.1 500") for a in answers), answers
    finally:
        server.should_exit = True
        thread.join(10)


def _read_response(conn: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data  # closed by the server
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += conn.recv(4096)
    return data
