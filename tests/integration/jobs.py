"""Helpers to submit jobs and wait for them over HTTP."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

from api.schemas import HEIGHTS_EXAMPLE

FINAL = {"succeeded", "failed", "cancelled", "pruned"}

# The README's heights example, seeded so every run of a test trains the same model.
HEIGHTS: dict[str, Any] = copy.deepcopy(HEIGHTS_EXAMPLE)
HEIGHTS["training"]["seed"] = 0


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
