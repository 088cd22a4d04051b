"""The product's path on the real stack: submit, watch it train, predict, find it in MLflow."""

from __future__ import annotations

import math
import time

import pytest

from tests.integration.jobs import HEIGHTS, run, spec, submit, wait
from tests.integration.stack import Stack

pytestmark = pytest.mark.integration


def test_heights_example_learns_and_predicts(stack: Stack) -> None:
    with stack.client() as client:
        queued = submit(client, HEIGHTS)
        assert queued["status"] == "queued"
        assert queued["summary"]["total_params"] == 4353
        assert [layer["params"] for layer in queued["summary"]["layers"]] == [128, 4160, 65]
        job = wait(client, queued["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"] == {"epoch": 100, "epochs": 100}
        assert job["started_at"] and job["finished_at"]
        history = client.get(f"/v1/jobs/{job['id']}/metrics").json()
        assert [row["epoch"] for row in history] == list(range(1, 101))
        assert history[0]["loss"] / history[-1]["loss"] >= 10
        assert job["metrics"]["loss"] == history[-1]["loss"]
        assert "mae" in history[-1]
        answer = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[80]]})
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        assert 160 <= prediction[0] <= 192


def test_xor_with_a_hidden_layer_gets_all_four_points(stack: Stack) -> None:
    body = {"name": "xor", "model": {"input_shape": [2], "layers": [
        {"type": "dense", "units": 8, "activation": "tanh"},
        {"type": "dense", "units": 1, "activation": "sigmoid"}]},
        "training": {"optimizer": {"type": "adam", "lr": 0.05}, "loss": "bce", "epochs": 300,
                     "batch_size": 4, "metrics": ["accuracy"], "seed": 1},
        "data": {"builtin": {"name": "xor"}}}
    with stack.client() as client:
        job = run(client, body)
        answer = client.post(f"/v1/jobs/{job['id']}/predict",
                             json={"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]]}).json()
        assert answer["labels"] == [0, 1, 1, 0]
        # The fused sigmoid is applied at predict time: outputs are probabilities.
        assert all(0 <= p[0] <= 1 for p in answer["predictions"])


def test_iris_reaches_validation_accuracy_above_0_9(stack: Stack) -> None:
    # 30 validation rows (stratified): above 0.9 allows at most 2 mistakes. Iris has a few
    # overlapping versicolor/virginica rows, so some seeds' splits hold 3 of them; the seed is
    # fixed so the test is deterministic, and it is not the luckiest one (seeds 1-5 give
    # 0.97-1.0 in-process, seed 0 exactly 0.9).
    body = {"name": "iris", "model": {"input_shape": [4], "layers": [
        {"type": "dense", "units": 16, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"}]},
        "training": {"optimizer": {"type": "adam", "lr": 0.01}, "loss": "cross_entropy",
                     "epochs": 100,
                     "batch_size": 16, "metrics": ["accuracy"], "seed": 3,
                     "validation_split": 0.2, "standardize": True},
        "data": {"builtin": "iris"}}
    with stack.client() as client:
        job = run(client, body)
        assert job["metrics"]["val_accuracy"] > 0.9
        answer = client.post(f"/v1/jobs/{job['id']}/predict",
                             json={"inputs": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).json()
        assert answer["labels"] == [0, 2]
        assert all(math.isclose(sum(row), 1, rel_tol=1e-5) for row in answer["predictions"])


def test_progress_moves_every_epoch_while_running(stack: Stack) -> None:
    body = spec(HEIGHTS, name="slow-heights")
    body["training"] = {**body["training"], "epochs": 150, "batch_size": 1}
    with stack.client() as client:
        job = submit(client, body)
        seen = set()
        while job["status"] in ("queued", "running"):
            job = client.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] == "running" and 0 < job["progress"]["epoch"] < 150:
                seen.add(job["progress"]["epoch"])
                assert "loss" in job["metrics"]
            time.sleep(0.02)
        assert job["status"] == "succeeded"
        assert len(seen) >= 3, f"saw progress only at epochs {sorted(seen)}"


def test_a_diverging_job_fails_with_its_cause(stack: Stack) -> None:
    body = spec(HEIGHTS, name="diverges")
    body["training"] = {**body["training"], "optimizer": {"type": "sgd", "lr": 5.0}}
    with stack.client() as client:
        job = wait(client, submit(client, body)["id"])
        assert job["status"] == "failed"
        assert job["error"]["type"] == "training_diverged"
        message = job["error"]["message"]
        assert "at epoch" in message and ("nan" in message or "inf" in message), message
        answer = client.post(f"/v1/jobs/{job['id']}/predict", json={"inputs": [[80]]})
        assert answer.status_code == 409
        assert answer.json()["error"]["type"] == "conflict"


def test_cancel_queued_and_running_jobs(stack: Stack) -> None:
    long_job = spec(HEIGHTS, name="long")
    long_job["training"] = {**long_job["training"], "epochs": 20000, "batch_size": 1}
    with stack.client() as client:
        running = submit(client, long_job)
        wait(client, running["id"], statuses={"running"})
        queued = submit(client, spec(HEIGHTS, name="behind-the-long-one"))
        assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "queued"
        cancelled = client.post(f"/v1/jobs/{queued['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        response = client.post(f"/v1/jobs/{running['id']}/cancel")
        assert response.json()["status"] == "cancelled"
        # The worker stops at its next batch and stores the epochs it finished until then
        # (test_endings); after that, progress must not move on.
        time.sleep(2)
        stopped_at = client.get(f"/v1/jobs/{running['id']}").json()["progress"]["epoch"]
        time.sleep(1)
        job = client.get(f"/v1/jobs/{running['id']}").json()
        assert job["status"] == "cancelled" and job["progress"]["epoch"] == stopped_at < 20000
        again = client.post(f"/v1/jobs/{running['id']}/cancel")
        assert again.status_code == 409
        # The worker is alive and takes the next job.
        assert run(client, spec(HEIGHTS, name="after-cancel", training={
            **HEIGHTS["training"], "epochs": 3}))["status"] == "succeeded"
        assert wait(client, queued["id"])["status"] == "cancelled"
    from mlflow.tracking import MlflowClient

    if job["mlflow_run_id"]:
        run_info = MlflowClient(stack.mlflow_url).get_run(job["mlflow_run_id"]).info
        assert run_info.status == "KILLED"
