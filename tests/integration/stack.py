"""Starting the real stack for tests: a database of its own (migrated with Alembic), a broker,
an `mlflow server`, `celery worker` and `uvicorn` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("TAAS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TAAS_TEST_REDIS", "redis://127.0.0.1:6379")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # the thing is not up yet; remember why
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last_error})")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    # Set when stop() had to SIGKILL: a process too slow to shut down on a loaded machine is
    # not a crash (its exit code -9 is ours, not its own).
    killed_by_stop: bool = False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.killed_by_stop = True
            self.popen.wait(5)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start(name: str, args: list[str], env: dict[str, str], logs: Path) -> Process:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    handle = log.open("ab")
    popen = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=handle,
                             stderr=subprocess.STDOUT, start_new_session=True)
    return Process(name, popen, log)


def start_mlflow(workdir: Path) -> tuple[Process, str]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = start("mlflow", ["mlflow", "server", "--backend-store-uri",
                            f"sqlite:///{workdir / 'mlflow.db'}", "--artifacts-destination",
                            str(workdir / "artifacts"), "--host", "127.0.0.1", "--port",
                            str(port), "--workers", "1"],
                 # MLflow 3 starts job-runner processes for GenAI features taas does not use.
                 {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/health").status_code == 200, 120, "mlflow server")
    except TimeoutError:
        proc.stop()
        raise RuntimeError(f"mlflow server did not start:\n{proc.tail()}") from None
    return proc, url


@dataclass
class Stack:
    kind: str
    api_url: str
    env: dict[str, str]
    mlflow_url: str
    workdir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30, **kwargs)

    def start_worker(self, name: str = "worker", concurrency: int = 1) -> Process:
        node = f"{name}-{uuid.uuid4().hex[:6]}@%h"
        proc = start(name, ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
                            "--concurrency", str(concurrency), "-n", node],
                     self.env, self.workdir / "logs")
        self.processes[name] = proc
        return proc

    def start_api(self) -> Process:
        port = int(self.api_url.rsplit(":", 1)[1])
        proc = start("api", ["uvicorn", "api.main:app", "--host", "127.0.0.1", "--port",
                             str(port)], self.env, self.workdir / "logs")
        self.processes["api"] = proc
        wait_until(lambda: httpx.get(f"{self.api_url}/readyz").status_code == 200, 60,
                   f"API ({self.kind})", interval=0.2)
        return proc

    def stop(self) -> None:
        for proc in self.processes.values():
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{proc.tail()}" for name, proc in self.processes.items())


def create_database(prefix: str) -> str:
    """A new, empty Postgres database; its name. psycopg.OperationalError if Postgres is down."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the admin URL's server."""
    return f"postgresql+psycopg://{PG_ADMIN_URL.split('://', 1)[1].rsplit('/', 1)[0]}/{name}"


def free_redis_url() -> str:
    """A Redis database index no client is connected to, emptied, as a URL (so stacks and
    benchmarks running at the same time never share one). redis.ConnectionError if Redis is
    down."""
    admin = redis.Redis.from_url(f"{REDIS_URL}/0", socket_connect_timeout=5)
    try:
        me = admin.client_id()
        busy = {int(c["db"]) for c in admin.client_list() if int(c["id"]) != me}
    finally:
        admin.close()
    # Indices this process handed out come last: their stack may not have connected yet.
    order = sorted(range(16), key=lambda i: (i in _handed_out, -i))
    for index in order:
        if index not in busy:
            _handed_out.add(index)
            redis.Redis.from_url(f"{REDIS_URL}/{index}").flushdb()
            return f"{REDIS_URL}/{index}"
    raise RuntimeError("every Redis database index has clients connected")


_handed_out: set[int] = set()


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env,
                   check=True, capture_output=True)


def base_env(workdir: Path, mlflow_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAAS_")}
    env.update(TAAS_DATA_DIR=str(workdir / "data"), TAAS_MLFLOW_TRACKING_URI=mlflow_url,
               TAAS_MLFLOW_EXPERIMENT=f"taas-test-{workdir.name}", TAAS_PROGRESS_INTERVAL="0.05",
               # Tests (the schema fuzzer above all) must reach every route's logic, not the
               # rate limiter's 429; test_security sets its own limits to test them.
               TAAS_RATE_LIMIT="100000", TAAS_RATE_BURST="100000",
               # Webhook receivers in tests listen on loopback; retries come quickly.
               TAAS_WEBHOOK_ALLOW_PRIVATE="1", TAAS_WEBHOOK_BACKOFF="0.2",
               # Most stacks' workers never train data-parallel: no rank server importing
               # in the background at each start (test_distributed keeps the default, warm).
               TAAS_DISTRIBUTED_WARM="false",
               PYTHONUNBUFFERED="1")
    return env
