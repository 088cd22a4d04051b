"""The real stack for benchmarks, started with the integration tests' helpers: a Postgres
database of its own (migrated), a Redis database index of its own, an `mlflow server`, a
`celery worker` and `uvicorn`. Only the bench's own processes and databases are touched."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.jobs import wait_worker_ready
from tests.integration.stack import (
    Process,
    Stack,
    base_env,
    create_database,
    database_url,
    drop_database,
    free_port,
    free_redis_url,
    migrate,
    start,
    start_mlflow,
    wait_until,
)

CACHE_SIZE = 32  # TAAS_PREDICT_CACHE_SIZE of the bench's API (the default)


class Services:
    """Started lazily, stopped once: the MLflow server and the Postgres + Redis stack."""

    def __init__(self, keep: bool = False) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="taas-bench-"))
        self.keep = keep
        self._mlflow: tuple[Process, str] | None = None
        self._stack: Stack | None = None
        self._db: str | None = None
        self.redis_url: str | None = None
        self.extra: list[Process] = []
        self._env: dict[str, str] | None = None
        self.workers = 0
        self.worker: Process | None = None
        self._started = 0
        self._worker_ready = False
        self.shared: dict[str, Any] = {}  # what one benchmark leaves for another (B5 -> B6)

    @property
    def mlflow_url(self) -> str:
        if self._mlflow is None:
            self._mlflow = start_mlflow(self.workdir / "mlflow")
        return self._mlflow[1]

    def database(self) -> str:
        """The bench's own migrated Postgres database (SQLAlchemy URL)."""
        if self._db is None:
            self._db = create_database("taas_bench")
        return database_url(self._db)

    def env(self) -> dict[str, str]:
        env = base_env(self.workdir, self.mlflow_url)
        if self.redis_url is None:
            self.redis_url = free_redis_url()
        # Production defaults (not the tests' fast progress interval), except the per-tenant
        # request rate and job quota: the bench measures capacity, not the limiter.
        env.pop("TAAS_PROGRESS_INTERVAL", None)
        env.update(TAAS_DATABASE_URL=self.database(), TAAS_BROKER_URL=self.redis_url,
                   TAAS_PREDICT_CACHE_SIZE=str(CACHE_SIZE),
                   TAAS_MLFLOW_EXPERIMENT="taas-bench", TAAS_RATE_LIMIT="1000000",
                   TAAS_RATE_BURST="1000000", TAAS_MAX_CONCURRENT_JOBS="1000000",
                   PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        return env

    def migrated_env(self) -> dict[str, str]:
        """The stack's environment, its database migrated (once)."""
        if self._env is None:
            env = self.env()
            migrate(env)
            self._env = env
        return self._env

    def stack(self, workers: int = 1, wait: bool = True, fresh: bool = False) -> Stack:
        """The API and a worker with `workers` pool processes (restarted when that differs, or
        with `fresh`); with `wait`, both ready (the worker's pool up), else only started."""
        if self._stack is None:
            self._stack = Stack(kind="postgres-redis", api_url=f"http://127.0.0.1:{free_port()}",
                                env=self.migrated_env(), mlflow_url=self.mlflow_url,
                                workdir=self.workdir)
        stack = self._stack
        if fresh or self.worker is None or self.worker.popen.poll() is not None or \
                self.workers != workers:
            if self.worker is not None:
                self.worker.stop()
            self._started += 1  # a fresh log per worker, so `ready.` is this one's
            self.worker = stack.start_worker(f"worker{self._started}-x{workers}", workers)
            self.workers, self._worker_ready = workers, False
        if "api" not in stack.processes:  # as Stack.start_api, without waiting here
            port = stack.api_url.rsplit(":", 1)[1]
            stack.processes["api"] = start("api", ["uvicorn", "api.main:app", "--host",
                                                   "127.0.0.1", "--port", port],
                                           stack.env, self.workdir / "logs")
        if wait:
            wait_until(lambda: httpx.get(f"{stack.api_url}/readyz").status_code == 200, 120,
                       "API", interval=0.2)
            if not self._worker_ready:
                assert self.worker is not None
                wait_worker_ready(self.worker, workers)
                self._worker_ready = True
        return stack

    def stop(self) -> None:
        for proc in self.extra:
            proc.stop()
        if self._stack is not None:
            self._stack.stop()
        if self._mlflow is not None:
            self._mlflow[0].stop()
        if self._db is not None:
            drop_database(self._db)
        if self.redis_url is not None:
            redis.Redis.from_url(self.redis_url).flushdb()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
