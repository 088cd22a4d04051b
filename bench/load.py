"""HTTP load on loopback with httpx (sequential latency, threaded throughput) and RSS from
/proc. Bodies are serialised once up front, so the client spends no time encoding JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

MiB = 2**20


@dataclass(frozen=True)
class Request:
    """One HTTP call, replayable: method, URL (absolute) and a pre-encoded JSON body."""

    method: str
    url: str
    body: bytes | None = None

    @classmethod
    def json(cls, method: str, url: str, payload: Any) -> Request:
        return cls(method, url, json.dumps(payload).encode())

    def send(self, client: httpx.Client) -> httpx.Response:
        headers = {"content-type": "application/json"} if self.body is not None else None
        response = client.request(self.method, self.url, content=self.body, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{self.method} {self.url} -> {response.status_code}: "
                               f"{response.text[:300]}")
        return response


def new_client() -> httpx.Client:
    return httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=4))


def latencies(request: Request | Callable[[int], Request], n: int,
              client: httpx.Client | None = None) -> list[float]:
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
