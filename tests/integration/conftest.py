"""Fixtures for tests on the real stack.

Each stack is run twice: on PostgreSQL + Redis (production) and on the embedded default
(SQLite + the SQLite broker). Postgres and Redis must be reachable on loopback; when they are
not, the production tests skip, except with CI=true, where that fails the run.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
import redis

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
    start_mlflow,
)

CI = os.environ.get("CI", "").lower() == "true"


def _unreachable(what: str, error: Exception) -> NoReturn:
    message = f"{what} is unreachable ({error})"
    if CI:
        pytest.fail(f"{message}; with CI=true this fails the run", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def postgres_database(request: pytest.FixtureRequest) -> str:
    """The session stacks' database: created now, dropped when the session ends."""
    return _fresh_postgres_database(request)


@pytest.fixture(scope="session")
def redis_broker() -> str:
    """The session stacks' broker: a Redis database index of their own."""
    return _fresh_redis_database()


def _build_stack(kind: str, workdir: Path, mlflow_url: str, request: pytest.FixtureRequest,
                 extra_env: dict[str, str] | None = None) -> Stack:
    env = base_env(workdir, mlflow_url) | (extra_env or {})
    if kind == "postgres-redis":
        if "TAAS_DATABASE_URL" not in env:
            env["TAAS_DATABASE_URL"] = request.getfixturevalue("postgres_database")
        if "TAAS_BROKER_URL" not in env:
            env["TAAS_BROKER_URL"] = request.getfixturevalue("redis_broker")
    migrate(env)
    return Stack(kind=kind, api_url=f"http://127.0.0.1:{free_port()}", env=env,
                 mlflow_url=mlflow_url, workdir=workdir)


@pytest.fixture(scope="session", params=["postgres-redis", "embedded"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          mlflow_server: str) -> Iterator[Stack]:
    """A migrated database, a worker and the API, on one of the two configurations."""
    built = _build_stack(request.param, tmp_path_factory.mktemp(request.param), mlflow_server,
                         request)
    try:
        built.start_worker()
        built.start_api()
    except Exception:
        built.stop()
        raise
    yield built
    built.stop()
    _raise_if_crashed(built.processes.values())


StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  mlflow_server: str) -> Iterator[StackFactory]:
    """Builds extra stacks with their own settings (env), e.g. shrunk timeouts or auth on;
    each gets a fresh database (Postgres: its own), stopped at the end of the test.

    `make(kind, env={...}, workers=1, api=True)`.
    """
    built: list[Stack] = []

    def make(kind: str = "postgres-redis", *, env: dict[str, str] | None = None,
             workers: int = 1, api: bool = True) -> Stack:
        extra = dict(env or {})
        if kind == "postgres-redis" and "TAAS_BROKER_URL" not in extra:
            extra["TAAS_BROKER_URL"] = _fresh_redis_database()
        if kind == "postgres-redis" and "TAAS_DATABASE_URL" not in extra:
            extra["TAAS_DATABASE_URL"] = _fresh_postgres_database(request)
        new = _build_stack(kind, tmp_path_factory.mktemp(kind), mlflow_server, request, extra)
        built.append(new)
        for index in range(workers):
            new.start_worker(f"worker{index}")
        if api:
            new.start_api()
        return new

    yield make
    for each in built:
        each.stop()


def _fresh_postgres_database(request: pytest.FixtureRequest) -> str:
    try:
        name = create_database("taas_test")
    except psycopg.OperationalError as error:
        _unreachable("PostgreSQL", error)
    request.addfinalizer(lambda: drop_database(name))
    return database_url(name)


def _fresh_redis_database() -> str:
    try:
        return free_redis_url()
    except redis.exceptions.ConnectionError as error:
        _unreachable("Redis", error)


def _raise_if_crashed(processes: object) -> None:
    crashed = [p for p in processes if isinstance(p, Process)  # type: ignore[attr-defined]
               and p.popen.returncode not in (0, -15, None) and not p.killed_by_stop]
    assert not crashed, "\n".join(f"{p.name} exited {p.popen.returncode}:\n{p.tail()}"
                                  for p in crashed)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by selenium: the system's chromium and chromedriver."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        _unreachable("chromium and chromedriver (install them with .ci/apt-packages)",
                     FileNotFoundError("not on PATH"))
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def own_postgres_stack(*, workdir: Path, mlflow_url: str, env: dict[str, str]) -> Iterator[Stack]:
    """A Postgres + Redis stack of a module's own (a database of its own, dropped afterwards):
    one worker and the API, with `env` over the base environment."""
    try:
        name = create_database("taas_test")
        broker = free_redis_url()
    except (psycopg.OperationalError, redis.exceptions.ConnectionError) as error:
        _unreachable("Postgres/Redis", error)
    full = base_env(workdir, mlflow_url) | {"TAAS_DATABASE_URL": database_url(name),
                                            "TAAS_BROKER_URL": broker} | env
    built = Stack(kind="postgres-redis", api_url=f"http://127.0.0.1:{free_port()}", env=full,
                  mlflow_url=mlflow_url, workdir=workdir)
    try:
        migrate(full)
        built.start_worker()
        built.start_api()
        yield built
    finally:
        built.stop()
        drop_database(name)
