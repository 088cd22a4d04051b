"""Helpers to start sweeps and wait for them over HTTP."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx

from tests.integration.jobs import HEIGHTS

SWEEP_FINAL = {"succeeded", "failed", "cancelled"}
TRIAL_FINAL = {"succeeded", "failed", "cancelled", "pruned"}


def heights_base(epochs: int = 15, **training: Any) -> dict[str, Any]:
    base = copy.deepcopy(HEIGHTS)
    base["training"] = {**base["training"], "epochs": epochs, **training}
    return base


def sweep_body(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "heights-sweep", "base": base or heights_base(),
        "parameters": {
            "model.layers.0.units": {"type": "int", "low": 4, "high": 32},
            "training.optimizer.type": {"type": "categorical", "choices": ["adam", "rmsprop"]},
            "training.optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
        "objective": {"metric": "loss", "direction": "minimize"},
        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
        "max_trials": 8, "max_parallel": 2}
    body.update(changes)
    return body


def start(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.text
    sweep: dict[str, Any] = response.json()
    return sweep


def wait(client: httpx.Client, sweep_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sweep: dict[str, Any] = client.get(f"/v1/sweeps/{sweep_id}").json()
        if sweep["status"] in SWEEP_FINAL:
            return sweep
        time.sleep(0.2)
    raise AssertionError(f"sweep {sweep_id} still {sweep['status']} after {timeout}s: {sweep}")


def trials(client: httpx.Client, sweep_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/sweeps/{sweep_id}/trials")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()
    return found


def wait_for_trial(client: httpx.Client, sweep_id: str, status: str,
                   timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trial in trials(client, sweep_id):
            if trial["status"] == status:
                return trial
        time.sleep(0.1)
    raise AssertionError(f"no trial of sweep {sweep_id} became {status} in {timeout}s")
