"""The production stack, built from the Dockerfile and started from docker-compose.yml.

Runs against the containers that tests/docker/run.sh (`make test-docker`) started: the
README's walk-through, a dataset upload, a cancel, MLflow over its REST API, a worker
container killed mid-job, the API container restarted mid-poll, and the whole stack taken
down and up again with nothing lost. The tests run in this order and share the heights job.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from api.schemas import HEIGHTS_EXAMPLE
from tests.docker.conftest import Compose, wait_for

pytestmark = pytest.mark.docker

FINAL = {"succeeded", "failed", "cancelled"}
HEIGHTS_CSV = ("weight,target\n87,187\n81,174\n82,179\n92,192\n90,188\n61,160\n86,179\n66,168\n"
               "69,168\n69,174\n")
shared: dict[str, Any] = {}


def long_job(name: str, epochs: int) -> dict[str, Any]:
    body = copy.deepcopy(HEIGHTS_EXAMPLE)
    body["name"] = name
    body["training"] = {**body["training"], "epochs": epochs, "batch_size": 1}
    return body


def submit(client: httpx.Client, body: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def finished(client: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(
        lambda: (j := job(client, job_id))["status"] in FINAL and j, timeout, f"job {job_id}")
    return result


def running_past(client: httpx.Client, job_id: str, epoch: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        j = job(client, job_id)
        assert j["status"] not in FINAL, j
        return j if j["status"] == "running" and j["progress"]["epoch"] >= epoch else None

    result: dict[str, Any] = wait_for(check, 300, f"job {job_id} past epoch {epoch}")
    return result


def mlflow_runs(mlflow_url: str, job_id: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{mlflow_url}/api/2.0/mlflow/runs/search", json={
        "experiment_ids": [experiment_id(mlflow_url)],
        "filter": f"tags.`taas.job_id` = '{job_id}'"}, timeout=30)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json().get("runs", [])
    return runs


def experiment_id(mlflow_url: str) -> str:
    response = httpx.get(f"{mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
                         params={"experiment_name": "taas"}, timeout=30)
    assert response.status_code == 200, response.text
    found: str = response.json()["experiment"]["experiment_id"]
    return found


def loss_history(mlflow_url: str, run_id: str) -> list[float]:
    response = httpx.get(f"{mlflow_url}/api/2.0/mlflow/metrics/get-history",
                         params={"run_id": run_id, "metric_key": "loss", "max_results": 10000},
                         timeout=30)
    assert response.status_code == 200, response.text
    return [m["value"] for m in sorted(response.json()["metrics"], key=lambda m: m["step"])]


def test_readme_walkthrough_and_mlflow(client: httpx.Client, mlflow_url: str) -> None:
    job_id = submit(client, HEIGHTS_EXAMPLE)
    done = finished(client, job_id)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"epoch": 100, "epochs": 100}
    history = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert [row["epoch"] for row in history] == list(range(1, 101))
    response = client.post(f"/v1/jobs/{job_id}/predict", json={"inputs": [[80], [65]]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2 and predictions[0][0] > predictions[1][0]

    assert httpx.get(mlflow_url, timeout=30).status_code == 200  # the UI
    (run,) = mlflow_runs(mlflow_url, job_id)
    assert run["info"]["run_id"] == done["mlflow_run_id"] and run["info"]["status"] == "FINISHED"
    assert loss_history(mlflow_url, run["info"]["run_id"]) == [row["loss"] for row in history]
    artifacts = httpx.get(f"{mlflow_url}/api/2.0/mlflow/artifacts/list",
                          params={"run_id": run["info"]["run_id"]}, timeout=30).json()
    assert {"spec.json", "summary.txt"} <= {f["path"] for f in artifacts["files"]}
    shared["heights"] = {"id": job_id, "predictions": predictions, "history": history,
                         "run_id": run["info"]["run_id"]}


def test_dataset_upload_trains(client: httpx.Client) -> None:
    response = client.post("/v1/datasets", content=HEIGHTS_CSV,
                           headers={"content-type": "text/csv"})
    assert response.status_code in (200, 201), response.text
    dataset = response.json()
    assert (dataset["n"], dataset["x_shape"], dataset["y_shape"]) == (10, [10, 1], [10, 1])
    body = copy.deepcopy(HEIGHTS_EXAMPLE)
    body["data"] = {"dataset_id": dataset["id"]}
    body["training"]["epochs"] = 20
    done = finished(client, submit(client, body))
    assert done["status"] == "succeeded" and done["progress"]["epoch"] == 20, done
    # The fuzzer's find: a scalar y is the user's mistake, named, never a 500.
    bad = client.post("/v1/datasets", json={"x": [[1], [2]], "y": 5})
    assert bad.status_code == 422 and "y" in bad.text, bad.text


def test_cancel(client: httpx.Client, mlflow_url: str) -> None:
    job_id = submit(client, long_job("cancel", epochs=5000))
    running_past(client, job_id, 1)
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    done = finished(client, job_id, timeout=60)
    assert done["status"] == "cancelled", done
    # The API answers "cancelled" at once; the worker learns of it at its next heartbeat
    # (TAAS_HEARTBEAT_INTERVAL, 5 s) and only then ends the MLflow run, as KILLED.
    statuses = wait_for(
        lambda: (s := {run["info"]["status"] for run in mlflow_runs(mlflow_url, job_id)})
        and "RUNNING" not in s and s, 60, f"job {job_id}'s MLflow run to end")
    assert statuses == {"KILLED"}, statuses


def test_killed_worker_container_job_still_ends(client: httpx.Client, compose: Compose,
                                                mlflow_url: str) -> None:
    job_id = submit(client, long_job("kill-worker", epochs=400))
    running_past(client, job_id, 20)
    compose.docker_cli("kill", compose.container("worker"))
    compose("up", "-d", "--no-build", "worker")  # what `restart: unless-stopped` would not do
    done = finished(client, job_id, timeout=300)
    lost = done["status"] == "failed" and done["error"]["type"] == "worker_lost"
    assert lost or (done["status"] == "succeeded" and done["attempt"] == 2), done
    if done["status"] == "succeeded":
        history = client.get(f"/v1/jobs/{job_id}/metrics").json()
        assert [row["epoch"] for row in history] == list(range(1, 401))
    runs = mlflow_runs(mlflow_url, job_id)
    assert all(run["info"]["status"] != "RUNNING" for run in runs), runs
    attempts = Counter(tag["value"] for run in runs for tag in run["data"]["tags"]
                       if tag["key"] == "taas.attempt")
    assert set(attempts.values()) == {1}, attempts  # one run per attempt, no duplicate


def test_api_restarted_mid_poll_loses_nothing(client: httpx.Client, compose: Compose) -> None:
    job_id = submit(client, long_job("api-restart", epochs=150))
    running_past(client, job_id, 5)
    compose("restart", "api")
    done = finished(client, job_id)  # polling straight through the restart
    assert done["status"] == "succeeded", done
    history = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert [row["epoch"] for row in history] == list(range(1, 151))


def test_down_and_up_keeps_jobs_weights_and_runs(client: httpx.Client, compose: Compose,
                                                 mlflow_url: str) -> None:
    heights = shared["heights"]
    before = {j["id"] for j in client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    compose("down", "--timeout", "30")
    started = time.monotonic()
    compose.up()
    print(f"stack up again in {time.monotonic() - started:.1f}s")
    after = {j["id"] for j in client.get("/v1/jobs", params={"limit": 100}).json()["jobs"]}
    assert before == after
    assert job(client, heights["id"])["status"] == "succeeded"
    assert client.get(f"/v1/jobs/{heights['id']}/metrics").json() == heights["history"]
    response = client.post(f"/v1/jobs/{heights['id']}/predict", json={"inputs": [[80], [65]]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == heights["predictions"]
    (run,) = mlflow_runs(mlflow_url, heights["id"])
    assert run["info"]["run_id"] == heights["run_id"]
    assert loss_history(mlflow_url, heights["run_id"]) == [r["loss"] for r in heights["history"]]
