"""Fault injection on real processes: a job, once accepted, always reaches a final state.

Timings are shrunk by configuration (heartbeat 0.5 s, lost after 4 s) so each case runs in
seconds. Services are taken away without touching the machine's own servers: a private
redis-server is restarted, and Postgres and MLflow sit behind TCP proxies that are cut.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from typing import Any

import httpx
import psycopg
import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import make_url

from tests.integration.conftest import StackFactory, _fresh_postgres_database
from tests.integration.jobs import HEIGHTS, spec, submit, wait
from tests.integration.proxy import Proxy
from tests.integration.stack import Stack, free_port, wait_until

pytestmark = pytest.mark.integration

FAULT_ENV = {"TAAS_HEARTBEAT_INTERVAL": "0.5", "TAAS_HEARTBEAT_TIMEOUT": "4",
             "TAAS_REQUEUE_AFTER": "3", "TAAS_CHECKPOINT_INTERVAL": "0.3",
             "TAAS_TRACKING_TIMEOUT": "6", "TAAS_MAX_ATTEMPTS": "3",
             "TAAS_PROGRESS_INTERVAL": "0.2"}
EPOCHS = 300


def long_job(name: str, epochs: int = EPOCHS) -> dict[str, Any]:
    body = spec(HEIGHTS, name=name)
    body["training"] = {**body["training"], "epochs": epochs, "batch_size": 1}
    return body


def worker_children(stack: Stack, name: str = "worker0") -> list[int]:
    parent = stack.processes[name].popen.pid
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True,
                         text=True).stdout
    return [int(pid) for pid in out.split()]


def wait_running_past(client: httpx.Client, job_id: str, epoch: int, attempt: int = 1,
                      timeout: float = 60) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        ok = job["status"] == "running" and job["attempt"] == attempt \
            and job["progress"]["epoch"] >= epoch
        return job if ok else None

    result: dict[str, Any] = wait_until(check, timeout, f"job {job_id} past epoch {epoch}", 0.05)
    return result


def mlflow_runs_by_attempt(stack: Stack, job_id: str) -> Counter[str]:
    client = MlflowClient(stack.mlflow_url)
    experiment = client.get_experiment_by_name(stack.env["TAAS_MLFLOW_EXPERIMENT"])
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], f"tags.`taas.job_id` = '{job_id}'")
    assert all(run.info.status != "RUNNING" for run in runs), [r.info for r in runs]
    return Counter(run.data.tags["taas.attempt"] for run in runs)


def assert_complete_history(client: httpx.Client, job_id: str, epochs: int) -> None:
    history = client.get(f"/v1/jobs/{job_id}/metrics").json()
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))


def test_a_killed_worker_child_resumes_on_the_next_attempt(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV)
    with stack.client() as client:
        job = submit(client, long_job("kill-child"))
        wait_running_past(client, job["id"], 50)
        (child,) = worker_children(stack)
        os.kill(child, signal.SIGKILL)
        started = time.monotonic()
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
        assert job["attempt"] == 2
        assert time.monotonic() - started < 4 + 60
        assert_complete_history(client, job["id"], EPOCHS)
    runs = mlflow_runs_by_attempt(stack, job["id"])
    assert set(runs.values()) == {1} and set(runs) == {"1", "2"}


def test_a_killed_worker_is_replaced_and_the_job_finishes(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV)
    with stack.client() as client:
        job = submit(client, long_job("kill-worker"))
        wait_running_past(client, job["id"], 50)
        stack.processes["worker0"].stop(signal.SIGKILL)
        stack.start_worker("worker1")
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        assert_complete_history(client, job["id"], EPOCHS)
    assert set(mlflow_runs_by_attempt(stack, job["id"]).values()) == {1}


def test_a_job_that_always_kills_its_worker_fails_after_max_attempts(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV)
    with stack.client() as client:
        job = submit(client, long_job("poison", epochs=100000))
        for attempt in (1, 2, 3):
            wait_running_past(client, job["id"], 1, attempt=attempt, timeout=60)
            for child in worker_children(stack):
                os.kill(child, signal.SIGKILL)
        job = wait(client, job["id"], timeout=60)
        assert job["status"] == "failed" and job["error"]["type"] == "worker_lost", job
        assert job["attempt"] == 3
        # The worker survived all of it and takes new work.
        assert wait(client, submit(client, long_job("after-poison", 3))["id"])["status"] == \
            "succeeded"


def test_duplicate_deliveries_change_nothing(stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV, workers=2)
    from celery import Celery

    sender = Celery(broker=stack.env["TAAS_BROKER_URL"])
    with stack.client() as client:
        job = submit(client, long_job("duplicates", epochs=300))
        wait_running_past(client, job["id"], 10)
        for _ in range(3):
            sender.send_task("taas.train_job", args=[job["id"]], queue="cpu")
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded" and job["attempt"] == 1, job
        assert_complete_history(client, job["id"], 300)
    assert mlflow_runs_by_attempt(stack, job["id"]) == Counter({"1": 1})


@pytest.fixture
def private_redis(tmp_path) -> Any:  # type: ignore[no-untyped-def]
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
            "no", "--dir", str(tmp_path)]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen[bytes] | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
            wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                              capture_output=True).returncode == 0, 10, "redis")

        def stop(self) -> None:
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()

    server = Server()
    server.start()
    yield server
    server.stop()


def test_a_redis_restart_loses_no_job(stack_factory: StackFactory, private_redis: Any) -> None:
    stack = stack_factory("postgres-redis", env={**FAULT_ENV,
                                                 "TAAS_BROKER_URL": private_redis.url})
    with stack.client() as client:
        running = submit(client, long_job("redis-running", epochs=300))
        wait_running_past(client, running["id"], 10)
        queued = [submit(client, long_job(f"redis-queued-{i}", epochs=20))["id"] for i in range(2)]
        private_redis.stop()  # Redis keeps nothing on disk: the queued messages are gone
        time.sleep(1)
        private_redis.start()
        for job_id in [running["id"], *queued]:
            job = wait(client, job_id, timeout=120)
            assert job["status"] == "succeeded", job


def _behind_proxy(url: str) -> tuple[str, Proxy]:
    parsed = make_url(url)
    proxy = Proxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxy.start()
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False), \
        proxy


def test_postgres_down_for_seconds_mid_run(stack_factory: StackFactory,
                                           request: pytest.FixtureRequest) -> None:
    url, proxy = _behind_proxy(_fresh_postgres_database(request))
    request.addfinalizer(proxy.cut)
    stack = stack_factory("postgres-redis", env={**FAULT_ENV, "TAAS_DATABASE_URL": url})
    with stack.client() as client:
        job = submit(client, long_job("pg-down", epochs=400))
        wait_running_past(client, job["id"], 10)
        proxy.cut()
        try:
            answer = client.get(f"/v1/jobs/{job['id']}")
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["type"] == "database_unavailable"
            assert answer.headers["retry-after"]
            time.sleep(4)
        finally:
            proxy.start()
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
        assert client.get("/readyz").status_code == 200
        assert_complete_history(client, job["id"], 400)


def test_mlflow_down_briefly_loses_no_metric(stack_factory: StackFactory,
                                             mlflow_server: str,
                                             request: pytest.FixtureRequest) -> None:
    url, proxy = _behind_proxy(mlflow_server)
    request.addfinalizer(proxy.cut)
    stack = stack_factory("postgres-redis", env={**FAULT_ENV, "TAAS_MLFLOW_TRACKING_URI": url})
    with stack.client() as client:
        job = submit(client, long_job("mlflow-blip", epochs=300))
        wait_running_past(client, job["id"], 10)
        proxy.cut()
        time.sleep(2)  # shorter than TAAS_TRACKING_TIMEOUT: metrics wait in the buffer
        proxy.start()
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
    history = MlflowClient(stack.mlflow_url).get_metric_history(job["mlflow_run_id"], "loss")
    assert sorted(m.step for m in history) == list(range(1, 301))
    assert mlflow_runs_by_attempt(stack, job["id"]) == Counter({"1": 1})


def test_mlflow_down_for_good_fails_the_job_and_ends_its_run_later(
        stack_factory: StackFactory, mlflow_server: str,
        request: pytest.FixtureRequest) -> None:
    url, proxy = _behind_proxy(mlflow_server)
    request.addfinalizer(proxy.cut)
    stack = stack_factory("postgres-redis", env={**FAULT_ENV, "TAAS_MLFLOW_TRACKING_URI": url})
    with stack.client() as client:
        job = submit(client, long_job("mlflow-gone", epochs=100000))
        wait_running_past(client, job["id"], 10)
        proxy.cut()
        job = wait(client, job["id"], timeout=60)
        assert job["status"] == "failed", job
        assert job["error"]["type"] == "tracking_unavailable"
        proxy.start()  # the reaper now ends the run it could not end before
        wait_until(lambda: MlflowClient(stack.mlflow_url).get_run(
            job["mlflow_run_id"]).info.status == "FAILED", 30, "the run to be ended")


class HistoryRefused:
    """Makes the job's database refuse every insert into job_epochs, as a real Postgres error,
    while every other write goes through: the history writes fail and the rest (heartbeats,
    checkpoints, the job's state) does not, deterministically, where a cut connection only
    does so in an unlucky ordering of the worker's threads. A sequence counts the refusals
    (nextval survives the rollback of the refused transaction)."""

    def __init__(self, database_url: str) -> None:
        self.url = make_url(database_url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)

    def _run(self, sql: str) -> tuple[Any, ...] | None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchone() if cursor.description else None

    def start(self) -> None:
        self._run("""
            CREATE SEQUENCE IF NOT EXISTS refused_history_writes;
            CREATE OR REPLACE FUNCTION refuse_history_write() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM nextval('refused_history_writes');
                RAISE EXCEPTION 'job_epochs refuses writes (test fault)';
            END $$;
            CREATE TRIGGER refuse_history BEFORE INSERT ON job_epochs
                FOR EACH STATEMENT EXECUTE FUNCTION refuse_history_write();""")

    def stop(self) -> None:
        self._run("DROP TRIGGER IF EXISTS refuse_history ON job_epochs")

    def refused(self) -> int:
        row = self._run("SELECT last_value, is_called FROM refused_history_writes")
        assert row is not None
        last, called = row
        return int(last) if called else 0


def test_a_checkpoint_never_runs_ahead_of_the_stored_history(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV)
    fault = HistoryRefused(stack.env["TAAS_DATABASE_URL"])
    with stack.client() as client:
        job = submit(client, long_job("checkpoint-ahead"))
        wait_running_past(client, job["id"], 10)
        fault.start()
        try:
            # Refused for several progress intervals (0.2 s), so for more than one checkpoint
            # interval (0.3 s): training goes on, its rows stay in the writer's memory.
            wait_until(lambda: fault.refused() >= 6, 30, "refused history writes")
            (child,) = worker_children(stack)
            os.kill(child, signal.SIGKILL)  # the attempt dies with those rows unwritten
        finally:
            fault.stop()
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
        # Attempt 2 resumes from the last checkpoint: the rows up to it must be stored.
        assert_complete_history(client, job["id"], EPOCHS)
        assert job["attempt"] == 2, job


def test_an_attempt_whose_history_cannot_be_stored_does_not_succeed(
        stack_factory: StackFactory) -> None:
    stack = stack_factory("postgres-redis", env=FAULT_ENV)
    fault = HistoryRefused(stack.env["TAAS_DATABASE_URL"])
    epochs = 100
    with stack.client() as client:
        job = submit(client, long_job("final-flush", epochs=epochs))
        wait_running_past(client, job["id"], 10)
        fault.start()
        try:
            # Training ends while the rows are refused; the final write retries for the
            # heartbeat timeout (4 s) while the heartbeat goes on, so no reaper steps in:
            # what attempt 1 does next is the worker's own decision.
            wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["status"]
                       != "running", 60, "attempt 1 to end")
        finally:
            fault.stop()
        job = wait(client, job["id"], timeout=120)
        assert job["status"] == "succeeded", job
        assert_complete_history(client, job["id"], epochs)
        assert job["attempt"] == 2, job  # attempt 1 could not store its history: re-queued
