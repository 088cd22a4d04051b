"""Job specs the benchmarks submit, and helpers to submit and wait over the service's HTTP API."""

from __future__ import annotations

import copy
import time
from datetime import datetime
from typing import Any

import httpx
import numpy as np

from bench.load import descendants
from tests.integration.jobs import FINAL, HEIGHTS
from tests.integration.stack import Process, wait_until


def heights(epochs: int = 100, name: str = "bench-heights") -> dict[str, Any]:
    """The README's walk-through job."""
    body = copy.deepcopy(HEIGHTS)
    body["name"] = name
    body["training"]["epochs"] = epochs
    return body


def tiny(index: int, epochs: int = 1) -> dict[str, Any]:
    """A tiny job whose model differs with `index` (hidden width 192..255: 50k-66k params),
    trained on the 10 heights rows: its cost is the service's, not the training's."""
    units = 192 + index % 64
    body = heights(epochs=epochs, name=f"bench-tiny-{index}")
    body["model"]["layers"] = [{"type": "dense", "units": units, "activation": "relu"},
                               {"type": "dense", "units": units, "activation": "relu"},
                               {"type": "dense", "units": 1}]
    return body


def mlp784(name: str, rows: int = 64) -> dict[str, Any]:
    """The MLP 784-256-128-64-10 (softmax + cross entropy), one epoch on `rows` random rows."""
    rng = np.random.default_rng(0)
    x = np.round(rng.random((rows, 784)), 4).tolist()
    y = rng.integers(0, 10, rows).tolist()
    return {"name": name,
            "model": {"input_shape": [784], "layers": [
                {"type": "dense", "units": 256, "activation": "relu"},
                {"type": "dense", "units": 128, "activation": "relu"},
                {"type": "dense", "units": 64, "activation": "relu"},
                {"type": "dense", "units": 10, "activation": "softmax"}]},
            "training": {"optimizer": "adam", "loss": "cross_entropy", "epochs": 1,
                         "batch_size": 32, "seed": 0},
            "data": {"inline": {"x": x, "y": y}}}


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/jobs -> {response.status_code}: {response.text[:300]}")
    job: dict[str, Any] = response.json()
    return job


def wait(client: httpx.Client, job_id: str, statuses: set[str] = FINAL,
         timeout: float = 120, interval: float = 0.01) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} every `interval` s until the status is one of `statuses`."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s")
        time.sleep(interval)


def run_job(client: httpx.Client, body: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    job = wait(client, submit(client, body)["id"], timeout=timeout, interval=0.05)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job['id']} ended {job['status']}: {job.get('error')}")
    return job


def stamp(value: str | None) -> float:
    """An API timestamp (ISO 8601) as epoch seconds."""
    if value is None:
        raise ValueError("missing timestamp")
    return datetime.fromisoformat(value).timestamp()


def wait_worker_ready(proc: Process, processes: int, timeout: float = 120) -> None:
    """Until celery logs `ready.` and all its pool processes exist."""
    wait_until(lambda: "ready." in proc.tail(400), timeout, f"celery worker {proc.name}",
               interval=0.1)
    wait_until(lambda: len(descendants(proc.popen.pid)) >= 1 + processes, 30,
               "celery pool processes", interval=0.1)
