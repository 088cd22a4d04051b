"""HTTP load on loopback (sequential latency, threaded throughput) and RSS from /proc.

The client writes each request with one `sendall` on a keep-alive socket and reads the answer
with httptools (the C parser uvicorn uses): on a trivial endpoint a call took 1.05 ms, against
1.23 ms with the standard library's http.client and 1.68 ms with httpx, time that belongs to
the client, not to the server under test. Bodies are serialised once up front,
so the client spends no time encoding JSON either."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httptools

MiB = 2**20


@dataclass(frozen=True)
class Request:
    """One HTTP call, replayable: method, URL (absolute) and a pre-encoded body."""

    method: str
    url: str
    body: bytes | None = None
    media_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()  # any beyond content-type

    @classmethod
    def json(cls, method: str, url: str, payload: Any) -> Request:
        return cls(method, url, json.dumps(payload).encode())

    def send(self, client: Client) -> Reply:
        headers = {"content-type": self.media_type} if self.body is not None else {}
        headers.update(self.headers)
        response = client.request(self.method, self.url, content=self.body, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{self.method} {self.url} -> {response.status_code}: "
                               f"{response.text[:300]}")
        return response


@dataclass(frozen=True)
class Reply:
    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Client:
    """Keep-alive HTTP/1.1, one socket per host, reopened once if the server closed it. A call
    is one `sendall` of the request's bytes and the answer read by httptools (uvicorn's C
    parser), so the client adds as little as it can to what is measured."""

    def __init__(self, timeout: float = 60) -> None:
        self.timeout = timeout
        self._sockets: dict[str, socket.socket] = {}

    def request(self, method: str, url: str, content: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        fields = {"host": parts.netloc, **(headers or {})}
        if content is not None:
            fields["content-length"] = str(len(content))
        head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        message = f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + (content or b"")
        for attempt in (1, 2):
            sock = self._socket(parts.netloc)
            try:
                sock.sendall(message)
                return _read_reply(sock)
            except (ConnectionError, _Closed):
                sock.close()
                del self._sockets[parts.netloc]
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _socket(self, netloc: str) -> socket.socket:
        if netloc not in self._sockets:
            host, _, port = netloc.partition(":")
            sock = socket.create_connection((host, int(port or 80)), timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets[netloc] = sock
        return self._sockets[netloc]

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


class _Closed(Exception):
    """The server closed the connection before a whole answer came."""


class _Answer:
    """httptools' callbacks: the body's pieces, and whether the message is complete."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.done = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def _read_reply(sock: socket.socket) -> Reply:
    answer = _Answer()
    parser = httptools.HttpResponseParser(answer)
    while not answer.done:
        data = sock.recv(262_144)
        if not data:
            raise _Closed()
        parser.feed_data(data)
    return Reply(parser.get_status_code(), b"".join(answer.body))


def new_client() -> Client:
    return Client(timeout=60)


def latencies(request: Request | Callable[[int], Request], n: int,
              client: Client | None = None) -> list[float]:
    """n sequential calls over one keep-alive connection; seconds per call."""
    own = client is None
    client = client or new_client()
    out = []
    try:
        for i in range(n):
            req = request(i) if callable(request) else request
            start = time.perf_counter()
            req.send(client)
            out.append(time.perf_counter() - start)
    finally:
        if own:
            client.close()
    return out


def throughput(request: Request | Callable[[int], Request], threads: int,
               duration: float) -> float:
    """Completed calls per second with `threads` clients calling back to back for `duration`."""
    counts = [0] * threads
    errors: list[BaseException] = []
    start_line = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(slot: int) -> None:
        with new_client() as client:
            first = request(slot) if callable(request) else request
            first.send(client)  # connect before the clock starts
            start_line.wait()
            i = slot
            while time.perf_counter() < stop_at[0]:
                i += threads
                try:
                    (request(i) if callable(request) else request).send(client)
                except Exception as error:  # reported below; the window still ends
                    errors.append(error)
                    return
                counts[slot] += 1

    pool = [threading.Thread(target=worker, args=(slot,), daemon=True)
            for slot in range(threads)]
    for thread in pool:
        thread.start()
    stop_at[0] = time.perf_counter() + duration + 3600  # set properly once all are connected
    start_line.wait()
    began = time.perf_counter()
    stop_at[0] = began + duration
    for thread in pool:
        thread.join(duration + 120)
    elapsed = time.perf_counter() - began
    if errors:
        raise RuntimeError(f"{len(errors)} failed calls, first: {errors[0]}")
    return sum(counts) / elapsed


def descendants(pid: int) -> list[int]:
    """pid and all its children, grandchildren, ... (from /proc/*/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def rss_bytes(pid: int, children: bool = True) -> int:
    """VmRSS of the process (and its descendants), from /proc/PID/status."""
    total = 0
    for current in descendants(pid) if children else [pid]:
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total
