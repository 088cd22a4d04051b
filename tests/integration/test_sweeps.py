"""Sweeps on the real stack: Optuna's study in the service's database, trials as jobs."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from tests.integration.stack import Stack
from tests.integration.sweeps import TRIAL_FINAL, start, sweep_body, trials, wait

pytestmark = pytest.mark.integration


def test_a_seeded_random_sweep_finds_its_best_trial(stack: Stack) -> None:
    body = sweep_body()
    with stack.client() as client:
        sweep = wait(client, start(client, body)["id"])
        assert sweep["status"] == "succeeded", sweep
        found = trials(client, sweep["id"])
        assert [t["trial"] for t in found] == list(range(8))
        assert all(t["status"] in TRIAL_FINAL for t in found)
        for t in found:
            assert 4 <= t["params"]["model.layers.0.units"] <= 32
            assert t["params"]["training.optimizer.type"] in ("adam", "rmsprop")
            assert 1e-3 <= t["params"]["training.optimizer.lr"] <= 3e-2
        values = [t["value"] for t in found if t["status"] == "succeeded"]
        best = sweep["best"]
        assert best is not None and math.isclose(best["value"], min(values))
        assert best["params"] == found[best["trial"]]["params"]
        assert sweep["trials"]["succeeded"] == len(values)

        jobs = client.get("/v1/jobs", params={"sweep_id": sweep["id"]}).json()["jobs"]
        assert sorted(job["trial"] for job in jobs) == list(range(8))
        assert {job["sweep_id"] for job in jobs} == {sweep["id"]}
        answer = client.post(f"/v1/jobs/{best['job_id']}/predict", json={"inputs": [[80]]})
        assert answer.status_code == 200, answer.text

        # The same seed draws the same parameters for another sweep.
        again = trials(client, wait(client, start(client, sweep_body(max_trials=3))["id"])["id"])
        assert [t["params"] for t in again] == [t["params"] for t in found[:3]]

    runs = MlflowClient(stack.mlflow_url).search_runs(
        [sweep["mlflow_url"].split("/experiments/")[1].split("/")[0]],
        f"tags.`mlflow.parentRunId` = '{sweep['mlflow_run_id']}'")
    assert sorted(run.data.tags["taas.job_id"] for run in runs) == \
        sorted(t["job_id"] for t in found)
