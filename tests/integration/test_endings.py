"""However a job ends (cancelled, diverged), its stored history, `progress.epoch` and the epochs
MLflow holds are the same: the epochs buffered between progress writes are stored at the end.
Progress writes are made rare here (30 s), so without that final store nothing would be."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient

from tests.integration.conftest import StackFactory
from tests.integration.jobs import HEIGHTS, spec, submit, wait
from tests.integration.stack import Stack, wait_until

pytestmark = pytest.mark.integration

RARE_WRITES = {"TAAS_PROGRESS_INTERVAL": "30", "TAAS_HEARTBEAT_INTERVAL": "0.5"}


def mlflow_losses(stack: Stack, run_id: str) -> dict[int, float]:
    return {m.step: m.value for m in MlflowClient(stack.mlflow_url).get_metric_history(
        run_id, "loss")}


def ended_run(stack: Stack, run_id: str) -> None:
    """The worker ends the MLflow run after storing the last epochs."""
    wait_until(lambda: MlflowClient(stack.mlflow_url).get_run(run_id).info.status != "RUNNING",
               120, "the MLflow run's end")


def assert_same_history(client: httpx.Client, stack: Stack, job: dict[str, Any]) -> list[int]:
    history = client.get(f"/v1/jobs/{job['id']}/metrics").json()
    epochs = [row["epoch"] for row in history]
    losses = mlflow_losses(stack, job["mlflow_run_id"])
    assert epochs == sorted(losses)
    assert [row["loss"] for row in history] == pytest.approx([losses[e] for e in epochs])
    assert job["progress"]["epoch"] == (epochs[-1] if epochs else 0)
    return epochs


def test_a_cancelled_job_keeps_every_epoch_mlflow_holds(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=RARE_WRITES)
    body = spec(HEIGHTS, name="cancelled-late",
                training={**HEIGHTS["training"], "epochs": 100000, "batch_size": 1})
    with stack.client() as client:
        job_id = submit(client, body)["id"]
        running = wait(client, job_id, statuses={"running"})
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["mlflow_run_id"], 120,
                   "the MLflow run")
        time.sleep(2)  # some epochs, none written yet
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        run_id = client.get(f"/v1/jobs/{job_id}").json()["mlflow_run_id"]
        ended_run(stack, run_id)
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled", running
        epochs = assert_same_history(client, stack, job)
    assert len(epochs) >= 1 and epochs == list(range(1, len(epochs) + 1))
    assert_logged_as(stack, job_id, "cancelled")


def assert_logged_as(stack: Stack, job_id: str, status: str) -> None:
    """The worker's lines about the job carry its id, its end is logged with its real status
    (also on Celery's own outcome line), and MLflow's prints are no warnings."""
    log = stack.processes["worker0"].log.read_text(errors="replace")
    assert f"job={job_id}: job {job_id} ended: {status}" in log, log
    outcome = [line for line in log.splitlines() if "Task taas.train_job[" in line
               and " succeeded in " in line]
    assert outcome and all(f"'job {job_id} {status}'" in line for line in outcome), outcome
    assert "celery.redirected" not in log and "View run" not in log, log


def test_a_diverged_job_keeps_the_epochs_before_the_nan(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=RARE_WRITES)
    # Unstandardized heights and this SGD step blow up after a few epochs (seeded).
    body = spec(HEIGHTS, name="diverged", training={**HEIGHTS["training"], "epochs": 200,
                                                    "optimizer": {"type": "sgd", "lr": 0.006}})
    with stack.client() as client:
        job = wait(client, submit(client, body)["id"], timeout=180)
        assert job["status"] == "failed" and job["error"]["type"] == "training_diverged", job
        ended_run(stack, job["mlflow_run_id"])
        diverged_at = int(re.search(r"at epoch (\d+)", job["error"]["message"])[1])  # type: ignore[index]
        assert diverged_at >= 2, job
        epochs = assert_same_history(client, stack, job)
    assert epochs == list(range(1, diverged_at))
    assert_logged_as(stack, job["id"], "failed")
