"""Helpers to submit jobs and wait for them over HTTP."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}

HEIGHTS: dict[str, Any] = {
    "name": "heights",
    "model": {"input_shape": [1], "layers": [
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dense", "units": 1}]},
    "training": {"optimizer": {"type": "adam", "lr": 0.001}, "loss": "mse", "epochs": 100,
                 "batch_size": 10, "metrics": ["mae"], "seed": 0},
    "data": {"inline": {"x": [[87], [81], [82], [92], [90], [61], [86], [66], [69], [69]],
                        "y": [[187], [174], [179], [192], [188], [160], [179], [168], [168],
                              [174]]}},
}


def spec(base: dict[str, Any] = HEIGHTS, **changes: Any) -> dict[str, Any]:
    result = copy.deepcopy(base)
    result.update(changes)
    return result


def submit(client: httpx.Client, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, **kwargs)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def wait(client: httpx.Client, job_id: str, timeout: float = 120,
         statuses: set[str] = FINAL) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


def run(client: httpx.Client, body: dict[str, Any], timeout: float = 180) -> dict[str, Any]:
    job = wait(client, submit(client, body)["id"], timeout)
    assert job["status"] == "succeeded", job
    return job
