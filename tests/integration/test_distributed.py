"""Data-parallel jobs on the real stack: 2 ranks (gloo) forked by a Celery worker process's
rank server.

Every case ends in a final state within a stated bound and leaves no process of the job
behind (looked up in /proc by the job's id, which every rank has in its title, as `ps` shows
it). Timings are shrunk as in test_faults (heartbeat 0.5 s, lost after 4 s).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.integration.conftest import StackFactory
from tests.integration.jobs import HEIGHTS, spec, submit, wait
from tests.integration.stack import Stack, wait_until
from tests.integration.sweeps import start as start_sweep
from tests.integration.sweeps import sweep_body, trials
from tests.integration.sweeps import wait as wait_sweep
from tests.integration.test_faults import (
    FAULT_ENV,
    assert_complete_history,
    mlflow_runs_by_attempt,
    wait_running_past,
    worker_children,
)

pytestmark = pytest.mark.integration

ENV = {**FAULT_ENV, "TAAS_DISTRIBUTED_TIMEOUT": "20", "TAAS_DISTRIBUTED_WARM": "true"}
# From a rank's death to the end of its attempt: the rank server's report, the supervisor's
# poll (0.2 s) and the database writes; generous for a shared, loaded machine.
BOUND = 30.0
# Whole jobs, on a shared and loaded machine (a rank server's own start is seconds).
JOB_TIMEOUT = 400.0


def dist_job(name: str, epochs: int, processes: int = 2) -> dict[str, Any]:
    body = spec(HEIGHTS, name=name)
    body["training"] = {**body["training"], "epochs": epochs, "batch_size": 2,
                        "metrics": ["mae"], "validation_split": 0.2,
                        "distributed": {"processes": processes}}
    return body


def job_processes(job_id: str) -> list[int]:
    """Processes whose command line (a rank's title) names the job."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if job_id.encode() in cmdline and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def rank_pids(job_id: str) -> list[int]:
    return [pid for pid in job_processes(job_id)
            if b"worker.dist_entry" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def rank_servers(stack: Stack) -> list[int]:
    """The rank servers of the stack's worker processes."""
    children = set(worker_children(stack))
    found = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes()
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if title.startswith(b"taas rank server") and parent in children:
            found.append(int(proc.name))
    return found


def assert_no_leftovers(job_id: str, timeout: float = 60) -> None:
    wait_until(lambda: not job_processes(job_id), timeout, f"no process of job {job_id}", 0.2)


def test_a_distributed_job_trains_and_serves_like_any_job(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    # Warm by default: the worker process starts its rank server before any job asks for it.
    wait_until(lambda: rank_servers(stack), 60, "the worker's rank server", 0.2)
    with stack.client() as client:
        two = wait(client, submit(client, dist_job("dist-e2e", epochs=30))["id"],
                   timeout=JOB_TIMEOUT)
        assert two["status"] == "succeeded", (two, stack.logs())
        one_body = dist_job("dist-e2e-one", epochs=30)
        del one_body["training"]["distributed"]
        one = wait(client, submit(client, one_body)["id"], timeout=JOB_TIMEOUT)
        assert one["status"] == "succeeded", one
        assert two["summary"]["processes"] == 2 and one["summary"]["processes"] == 1
        assert_complete_history(client, two["id"], 30)
        h1 = client.get(f"/v1/jobs/{one['id']}/metrics").json()
        h2 = client.get(f"/v1/jobs/{two['id']}/metrics").json()
        for a, b in zip(h1, h2, strict=True):  # same seed, same global batch: same losses
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        inputs = {"inputs": [[70.0], [85.0]]}
        p1 = client.post(f"/v1/jobs/{one['id']}/predict", json=inputs).json()["predictions"]
        p2 = client.post(f"/v1/jobs/{two['id']}/predict", json=inputs).json()["predictions"]
        np.testing.assert_allclose(p2, p1, rtol=1e-4)
    assert mlflow_runs_by_attempt(stack, two["id"]) == {"1": 1}  # one run, not one per rank
    mlflow = MlflowClient(stack.mlflow_url)
    run = mlflow.get_run(two["mlflow_run_id"])
    assert run.data.params["training.distributed.processes"] == "2"
    assert [v.run_id for v in mlflow.search_model_versions("name='dist-e2e'")] == \
        [two["mlflow_run_id"]]
    assert_no_leftovers(two["id"])


def _killed_rank_case(stack: Stack, client: httpx.Client, name: str, sig: int) -> None:
    job = submit(client, dist_job(name, epochs=600))
    wait_running_past(client, job["id"], 20, timeout=JOB_TIMEOUT)
    ranks = rank_pids(job["id"])
    assert len(ranks) == 2, ranks
    os.kill(max(ranks), sig)  # the rank started last: usually rank 1
    started = time.monotonic()
    wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["attempt"] >= 2
               or client.get(f"/v1/jobs/{job['id']}").json()["status"] != "running",
               BOUND, "the end of attempt 1", 0.1)
    assert time.monotonic() - started < BOUND
    job = wait(client, job["id"], timeout=JOB_TIMEOUT)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["attempt"] == 2  # the lost attempt was retried, from its checkpoint
    assert_complete_history(client, job["id"], 600)
    assert_no_leftovers(job["id"])


def test_a_sigkilled_rank_fails_the_attempt_and_the_retry_finishes(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    with stack.client() as client:
        _killed_rank_case(stack, client, "dist-sigkill", signal.SIGKILL)


def test_an_exception_in_a_rank_fails_the_attempt(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    with stack.client() as client:  # SIGINT raises KeyboardInterrupt inside the rank
        _killed_rank_case(stack, client, "dist-raise", signal.SIGINT)


def test_a_killed_rank_server_is_a_lost_attempt_and_is_started_again(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    with stack.client() as client:
        job = submit(client, dist_job("dist-kill-server", epochs=600))
        wait_running_past(client, job["id"], 20, timeout=JOB_TIMEOUT)
        servers = rank_servers(stack)
        assert len(servers) == 1, servers
        os.kill(servers[0], signal.SIGKILL)  # its ranks die with it
        assert_no_leftovers(job["id"], timeout=BOUND)
        job = wait(client, job["id"], timeout=JOB_TIMEOUT)
        assert job["status"] == "succeeded", (job, stack.logs())
        assert job["attempt"] == 2  # a lost attempt, retried from its checkpoint
        assert_complete_history(client, job["id"], 600)
        assert rank_servers(stack) not in ([], servers)  # the retry started a new one
    assert_no_leftovers(job["id"])


def test_cancel_stops_every_rank(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    with stack.client() as client:
        job = submit(client, dist_job("dist-cancel", epochs=100000))
        wait_running_past(client, job["id"], 5, timeout=JOB_TIMEOUT)
        assert len(rank_pids(job["id"])) == 2
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        started = time.monotonic()
        # Rank 0 learns of it at its next heartbeat (0.5 s here), stores its last epochs and
        # ends its MLflow run; the others stop with it (or are killed after a grace).
        assert_no_leftovers(job["id"], timeout=20)
        assert time.monotonic() - started < 20
        job = wait(client, job["id"])
        assert job["status"] == "cancelled"
        assert_complete_history(client, job["id"], job["progress"]["epoch"])
        wait_until(lambda: MlflowClient(stack.mlflow_url).get_run(
            job["mlflow_run_id"]).info.status == "KILLED", BOUND, "the run to end KILLED", 0.5)
        # The worker takes new work afterwards.
        assert wait(client, submit(client, dist_job("dist-after", 3))["id"],
                    timeout=JOB_TIMEOUT)["status"] == "succeeded"


def test_a_killed_celery_worker_leaves_no_rank(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV)
    with stack.client() as client:
        job = submit(client, dist_job("dist-kill-worker", epochs=600))
        wait_running_past(client, job["id"], 20, timeout=JOB_TIMEOUT)
        stack.processes["worker0"].stop(signal.SIGKILL)
        # The Celery child dies with its parent, and its rank server and ranks with it.
        assert_no_leftovers(job["id"], timeout=20)
        stack.start_worker("worker1")
        job = wait(client, job["id"], timeout=JOB_TIMEOUT)
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        assert_complete_history(client, job["id"], 600)
    assert_no_leftovers(job["id"])


def test_the_time_limit_stops_every_rank(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env={**ENV, "TAAS_JOB_TIME_LIMIT": "10"})
    with stack.client() as client:
        job = submit(client, dist_job("dist-time-limit", epochs=100000))
        job = wait(client, job["id"], timeout=10 + BOUND + 60)
        assert job["status"] == "failed", job
        assert job["error"]["type"] == "time_limit_exceeded", job
        assert job["progress"]["epoch"] > 0  # it trained until the limit
        assert_no_leftovers(job["id"], timeout=BOUND)
        run = MlflowClient(stack.mlflow_url).get_run(job["mlflow_run_id"])
        wait_until(lambda: MlflowClient(stack.mlflow_url).get_run(
            job["mlflow_run_id"]).info.status == "FAILED", BOUND, "the run to end FAILED", 0.5)
        assert run.data.params["training.distributed.processes"] == "2"


def test_two_distributed_jobs_at_once_on_one_host(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=ENV, workers=2)
    with stack.client() as client:
        ids = [submit(client, dist_job(f"dist-pair-{i}", epochs=40))["id"] for i in range(2)]
        for job_id in ids:
            job = wait(client, job_id, timeout=JOB_TIMEOUT)
            assert job["status"] == "succeeded", (job, stack.logs())
            assert_complete_history(client, job_id, 40)
            assert_no_leftovers(job_id)


def test_a_sweep_s_trials_train_data_parallel_and_its_winner_serves_by_alias(
        stack_factory: StackFactory) -> None:
    """Composition: a trial is an ordinary job; here on a worker whose rank server is not
    warm (TAAS_DISTRIBUTED_WARM=false), so the first trial starts it."""
    stack = stack_factory("postgres-redis", env={**ENV, "TAAS_DISTRIBUTED_WARM": "false"})
    assert not rank_servers(stack)
    base = dist_job("dist-sweep", epochs=15)
    body = sweep_body(base=base, max_trials=3, max_parallel=1)
    with stack.client() as client:
        sweep = wait_sweep(client, start_sweep(client, body)["id"], timeout=JOB_TIMEOUT)
        assert sweep["status"] == "succeeded" and sweep["trials"]["succeeded"] == 3, sweep
        for trial in trials(client, sweep["id"]):
            job = client.get(f"/v1/jobs/{trial['job_id']}").json()
            assert job["summary"]["processes"] == 2, job
            assert_complete_history(client, job["id"], 15)
            assert_no_leftovers(job["id"])
        assert len(rank_servers(stack)) == 1  # started once, kept for the next trials
        promoted = client.post(f"/v1/sweeps/{sweep['id']}/promote", json={"alias": "champion"})
        assert promoted.status_code == 200, promoted.text
        model = promoted.json()["model"]
        by_alias = client.post(f"/v1/models/{model}/aliases/champion/predict",
                               json={"inputs": [[80.0]]})
        by_job = client.post(f"/v1/jobs/{sweep['best']['job_id']}/predict",
                             json={"inputs": [[80.0]]})
        assert by_alias.status_code == 200, by_alias.text
        assert by_alias.json()["predictions"] == by_job.json()["predictions"]


def test_more_processes_than_allowed_is_refused_before_queueing(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("embedded", env={**ENV, "TAAS_MAX_PROCESSES_PER_JOB": "2"})
    with stack.client() as client:
        body = dist_job("dist-too-many", 3, processes=3)
        body["training"]["batch_size"] = 4
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["loc"] == ["training", "distributed", "processes"]
